"""Text conditioning: T5's encoder from a local folder (`encoder`) and its embeddings in the dataset file (`store`).

transformers is imported only when an encoder is loaded or built, so the rest of hpdm works without
the optional `text` extra.
"""
