"""The T5 text encoder (a small random one, built offline) and `hpdm encode-text` into the dataset file."""

import hashlib
import io
import json
import pickle
import socket
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

pytest.importorskip("transformers")

from hpdm_core.data.h5store import VideoStore  # noqa: E402
from hpdm_core.data.synthetic import make_synthetic  # noqa: E402
from hpdm_core.errors import BadInputError, MissingResourceError  # noqa: E402
from hpdm_core.text import encoder as text_encoder  # noqa: E402
from hpdm_core.text.encoder import (RANDOM_FLAG, build_random_t5, check_fingerprint, folder_fingerprint,  # noqa: E402
                                    load_text_encoder)
from hpdm_core.text.store import TextEmbeddings, encode_file, encode_prompts  # noqa: E402
from tests.helpers import hpdm

CAPTIONS = ["a red disc drifting to the upper left", "", "blue square moving right, slowly, and then a long way "
            "down towards the bottom edge of the frame", "ein grüner Würfel", "red circle moving up and left"]
# float32 noise between batch compositions of the same texts (CPU kernels), far below the values' scale ~1
BATCH_ATOL = 1e-5




@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a connection fails the test."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture(scope="module")
def t5_folder(tmp_path_factory) -> Path:
    return build_random_t5(tmp_path_factory.mktemp("t5") / "random-t5", seed=0)


@pytest.fixture(scope="module")
def encoder(t5_folder):
    return load_text_encoder(t5_folder, max_tokens=16)


def captioned_file(path: Path, captions: list[str]) -> Path:
    """A synthetic dataset file with a `captions` dataset, one caption per video."""
    make_synthetic(path, num_videos=len(captions), frames=2, resolution=8, classes=2, seed=0)
    with h5py.File(path, "r+") as f:
        f.create_dataset("captions", data=np.asarray(captions, dtype=object), dtype=h5py.string_dtype("utf-8"))
    return path


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_random_t5_builds_and_encodes_offline(tmp_path, no_network):
    import transformers

    folder = build_random_t5(tmp_path / "enc", seed=3)
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "t5" and config[RANDOM_FLAG] is True
    assert not (folder / "spiece.model").exists()  # byte-level: no vocabulary file
    enc = load_text_encoder(folder, max_tokens=12)
    assert (enc.name, enc.dim, enc.max_tokens, enc.random_weights) == ("enc", 128, 12, True)
    assert "RANDOM WEIGHTS" in enc.describe()
    tokens, mask = enc.encode(["a red disc", "a blue square"])
    assert tokens.dtype == torch.float32 and tokens.shape == (2, 12, 128) and mask.dtype == torch.bool
    assert tokens.device.type == "cpu" and torch.isfinite(tokens).all()
    # a normal transformers folder: plain transformers loads it and computes the same states
    model = transformers.T5EncoderModel.from_pretrained(folder, local_files_only=True).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True)
    batch = tokenizer(["a red disc"], return_tensors="pt")
    with torch.no_grad():
        plain = model(**batch).last_hidden_state[0]
    torch.testing.assert_close(tokens[0, :plain.shape[0]], plain, rtol=0, atol=BATCH_ATOL)


def test_outputs_are_deterministic_and_differ_between_texts(tmp_path, encoder):
    again = load_text_encoder(build_random_t5(tmp_path / "same", seed=0), max_tokens=16)
    assert again.fingerprint == encoder.fingerprint
    a, mask_a = encoder.encode(CAPTIONS)
    b, mask_b = again.encode(CAPTIONS)
    assert torch.equal(mask_a, mask_b) and torch.equal(a, b)
    # alone or in another batch: the same states (fixed padding to max_tokens; float32 kernel noise only)
    alone, _ = encoder.encode([CAPTIONS[4]], batch_size=1)
    torch.testing.assert_close(alone[0], a[4], rtol=0, atol=BATCH_ATOL)
    # different texts give clearly different states (values are of order 1)
    assert (a[0] - a[4]).abs().max() > 0.1 and (a[0] - a[3]).abs().max() > 0.1


def test_mask_counts_tokens_and_truncates_at_max_tokens(encoder):
    texts = ["abc", "ü", "", "   ", "x" * 40, "y" * 15]
    tokens, mask = encoder.encode(texts)
    # byte-level tokens: one per UTF-8 byte, then </s>; cut at 16 with </s> kept last
    assert mask.sum(1).tolist() == [4, 3, 0, 0, 16, 16]
    assert mask[0].tolist() == [True] * 4 + [False] * 12  # real tokens first, padding after
    assert (tokens[~mask] == 0).all() and (tokens[2:4] == 0).all()
    long, _ = encoder.encode(["x" * 40, "x" * 15])
    torch.testing.assert_close(long[0], long[1], rtol=0, atol=BATCH_ATOL)  # 40 x's cut to 15 x's + </s>
    assert text_encoder.DEFAULT_MAX_TOKENS == 64 and load_text_encoder(encoder.path).max_tokens == 64


def test_encode_text_round_trips_into_the_file(tmp_path, monkeypatch, capsys, t5_folder):
    encoder = load_text_encoder(t5_folder, max_tokens=40)  # CAPTIONS[2] alone is longer
    data = captioned_file(tmp_path / "cap.h5", CAPTIONS)
    frames_before = VideoStore(data).video(2).copy()
    code, out, err = hpdm(monkeypatch, capsys, "encode-text", "--data", str(data), "--text-encoder", str(t5_folder),
                          "--max-tokens", "40", "--batch-size", "2", "--device", "cpu", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["videos"] == 5 and result["captioned"] == 4 and result["truncated"] == 1
    assert result["fingerprint"] == encoder.fingerprint and result["random_weights"] is True
    assert "random" in err.lower() and sorted(p.name for p in tmp_path.iterdir()) == ["cap.h5"]  # no temporary left
    store = VideoStore(data)
    store.verify()
    assert np.array_equal(store.video(2), frames_before)
    text = TextEmbeddings(data)
    assert len(text) == 5
    assert {k: text.info[k] for k in ("encoder", "dim", "max_tokens", "random_weights", "completed")} == {
        "encoder": "random-t5", "dim": 128, "max_tokens": 40, "random_weights": True, "completed": True}
    order = [3, 0, 0, 1]
    tokens, mask = pickle.loads(pickle.dumps(text)).rows(order)  # as a DataLoader worker gets it
    assert tokens.dtype == np.float16 and tokens.shape == (4, 40, 128) and mask.dtype == bool
    direct, direct_mask = encoder.encode([CAPTIONS[i] for i in order])
    assert np.array_equal(mask, direct_mask.numpy()) and not mask[3].any()
    # equal to encoding the captions directly up to float16 rounding (relative 2^-11) and batch noise
    np.testing.assert_allclose(tokens.astype(np.float32), direct.numpy(), rtol=2 ** -10, atol=BATCH_ATOL)
    prompts, prompt_mask = encode_prompts(encoder, [CAPTIONS[3], CAPTIONS[0]])
    np.testing.assert_allclose(prompts.astype(np.float32), tokens[:2].astype(np.float32), rtol=2 ** -10,
                               atol=BATCH_ATOL)
    assert prompts.dtype == np.float16 and np.array_equal(prompt_mask, mask[:2])

    # a second run refuses to replace the embeddings without --overwrite
    code, _, err = hpdm(monkeypatch, capsys, "encode-text", "--data", str(data), "--text-encoder", str(t5_folder))
    assert code == 2 and "already has text embeddings" in err and "--overwrite" in err
    other = build_random_t5(tmp_path / "other", seed=1)
    code, out, _ = hpdm(monkeypatch, capsys, "encode-text", "--data", str(data), "--text-encoder", str(other),
                        "--max-tokens", "8", "--overwrite", "--json")
    assert code == 0 and json.loads(out)["fingerprint"] != encoder.fingerprint
    replaced = TextEmbeddings(data)
    assert replaced.info["max_tokens"] == 8 and replaced.rows([0])[0].shape == (1, 8, 128)
    assert np.array_equal(VideoStore(data).video(2), frames_before)
    with h5py.File(data) as f:
        assert list(f["text"].keys()) == ["embeddings", "mask"] and list(f["captions"].asstr()[...]) == CAPTIONS


def test_interrupted_encode_leaves_the_file_untouched(tmp_path, monkeypatch, t5_folder):
    data = captioned_file(tmp_path / "cap.h5", CAPTIONS)
    before = sha(data)
    enc = load_text_encoder(t5_folder, max_tokens=16)
    calls = []

    def encode_then_die(texts, batch_size=32):
        calls.append(len(texts))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return text_encoder.TextEncoder.encode(enc, texts, batch_size)

    monkeypatch.setattr(enc, "encode", encode_then_die)
    with pytest.raises(KeyboardInterrupt):
        encode_file(data, enc, batch_size=2)
    assert calls == [2, 2] and sha(data) == before and sorted(p.name for p in tmp_path.iterdir()) == ["cap.h5"]
    with pytest.raises(BadInputError, match="encode-text"):
        TextEmbeddings(data)
    monkeypatch.undo()
    assert encode_file(data, enc, batch_size=2)["captioned"] == 4  # run again: done
    assert len(TextEmbeddings(data)) == 5


def test_fingerprint_identifies_the_encoder(tmp_path, monkeypatch, t5_folder, encoder):
    other = load_text_encoder(build_random_t5(tmp_path / "seed1", seed=1), max_tokens=16)
    assert other.fingerprint != encoder.fingerprint
    assert folder_fingerprint(t5_folder, 17) != encoder.fingerprint == folder_fingerprint(t5_folder, 16)
    check_fingerprint(encoder.fingerprint, encoder, "data.h5")
    with pytest.raises(BadInputError, match="data.h5") as err:
        check_fingerprint(encoder.fingerprint, other, "data.h5")
    assert err.value.exit_code == 2

    # one changed weight byte changes it, both when hashed whole and by the fixed sample of a large file
    copy = build_random_t5(tmp_path / "copy", seed=0)
    weights = copy / "model.safetensors"
    raw = bytearray(weights.read_bytes())
    header = 8 + int.from_bytes(raw[:8], "little")
    assert len(raw) > header + 4096
    raw[-1] ^= 1  # in the last tensor; and in the last block of the sample
    for full_hash_bytes, block in ((text_encoder.FULL_HASH_BYTES, text_encoder.SAMPLE_BLOCK_BYTES), (1024, 64)):
        monkeypatch.setattr(text_encoder, "FULL_HASH_BYTES", full_hash_bytes)
        monkeypatch.setattr(text_encoder, "SAMPLE_BLOCK_BYTES", block)  # 32 x 64 bytes of a ~1 MB file
        weights.write_bytes(bytes(raw))
        changed = folder_fingerprint(copy, 16)
        weights.write_bytes((t5_folder / "model.safetensors").read_bytes())
        assert folder_fingerprint(copy, 16) == folder_fingerprint(t5_folder, 16) != changed


def test_full_encoder_decoder_checkpoint_is_read_as_its_encoder(tmp_path, encoder):
    """t5-11b ships the whole model: T5EncoderModel takes the encoder half, and nothing is reported missing."""
    import transformers

    config = transformers.T5Config.from_pretrained(encoder.path)
    full = transformers.T5ForConditionalGeneration(config)
    full.encoder.load_state_dict(encoder.model.encoder.state_dict())
    full.save_pretrained(tmp_path / "full")
    encoder.tokenizer.save_pretrained(tmp_path / "full")
    again = load_text_encoder(tmp_path / "full", max_tokens=16)
    a, _ = again.encode(CAPTIONS)
    b, _ = encoder.encode(CAPTIONS)
    torch.testing.assert_close(a, b, rtol=0, atol=BATCH_ATOL)


def test_missing_or_foreign_encoder_folders(tmp_path, monkeypatch, capsys, t5_folder):
    with pytest.raises(MissingResourceError, match="does not exist"):
        load_text_encoder(tmp_path / "nowhere")
    foreign = tmp_path / "gpt2"
    foreign.mkdir()
    (foreign / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(BadInputError, match="not T5"):
        load_text_encoder(foreign)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(BadInputError, match="config.json"):
        load_text_encoder(empty)
    no_weights = tmp_path / "no-weights"
    no_weights.mkdir()
    (no_weights / "config.json").write_text((t5_folder / "config.json").read_text())
    with pytest.raises(MissingResourceError, match="no weights"):
        load_text_encoder(no_weights)
    with pytest.raises(BadInputError, match="is a file"):
        load_text_encoder(t5_folder / "config.json")
    damaged = build_random_t5(tmp_path / "damaged", seed=0)
    (damaged / "model.safetensors").write_bytes(b"\xff" * 4096)
    with pytest.raises(BadInputError, match="cannot load T5 encoder weights"):
        load_text_encoder(damaged)
    # the CLI reports them with exit codes 3 and 2, without a traceback
    data = captioned_file(tmp_path / "cap.h5", CAPTIONS[:2])
    code, _, err = hpdm(monkeypatch, capsys, "encode-text", "--data", str(data), "--text-encoder",
                        str(tmp_path / "nowhere"))
    assert code == 3 and "does not exist" in err and "Traceback" not in err
    code, _, err = hpdm(monkeypatch, capsys, "encode-text", "--data", str(data), "--text-encoder", str(foreign))
    assert code == 2 and "not T5" in err and "Traceback" not in err


def test_file_without_captions_or_embeddings(tmp_path, monkeypatch, capsys, t5_folder):
    plain = make_synthetic(tmp_path / "plain.h5", num_videos=2, frames=2, resolution=8, classes=2)
    code, _, err = hpdm(monkeypatch, capsys, "encode-text", "--data", str(plain), "--text-encoder", str(t5_folder))
    assert code == 2 and "no captions" in err
    with pytest.raises(BadInputError, match="hpdm encode-text --data"):
        TextEmbeddings(plain)
    code, _, err = hpdm(monkeypatch, capsys, "encode-text", "--data", str(tmp_path / "none.h5"), "--text-encoder",
                        str(t5_folder))
    assert code == 3 and "does not exist" in err


def test_random_text_encoder_command(tmp_path, monkeypatch, capsys, no_network):
    out = tmp_path / "demo-t5"
    code, stdout, err = hpdm(monkeypatch, capsys, "random-text-encoder", "--out", str(out), "--seed", "2", "--json")
    result = json.loads(stdout)
    assert code == 0 and "RANDOM" in err and result["random_weights"] is True and result["dim"] == 128
    assert result["fingerprint"] == load_text_encoder(out).fingerprint  # at the default 64 tokens
    code, _, err = hpdm(monkeypatch, capsys, "random-text-encoder", "--out", str(out))
    assert code == 2 and "--overwrite" in err
    code, _, _ = hpdm(monkeypatch, capsys, "random-text-encoder", "--out", str(out), "--seed", "3", "--overwrite")
    assert code == 0 and load_text_encoder(out).fingerprint != result["fingerprint"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo-t5"]  # no temporary folder left


def test_spiece_tokenizer_folder(tmp_path, monkeypatch, t5_folder):
    """A folder laid out as google/t5-v1_1-* ship it: spiece.model and no tokenizer.json."""
    spm = pytest.importorskip("sentencepiece")
    folder = tmp_path / "t5-spiece"
    folder.mkdir()
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(CAPTIONS * 10), model_writer=model, vocab_size=40,
                                   model_type="unigram", pad_id=0, eos_id=1, unk_id=2, bos_id=-1, minloglevel=2)
    (folder / "spiece.model").write_bytes(model.getvalue())
    config = json.loads((t5_folder / "config.json").read_text())
    del config[RANDOM_FLAG]
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "model.safetensors").write_bytes((t5_folder / "model.safetensors").read_bytes())
    (folder / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "T5Tokenizer", "extra_ids": 0}))
    enc = load_text_encoder(folder, max_tokens=64)
    assert not enc.random_weights and type(enc.tokenizer).__name__.startswith("T5Tokenizer")
    _, mask = enc.encode(["a red disc", ""])
    assert mask[0].sum() == len(enc.tokenizer("a red disc")["input_ids"]) and not mask[1].any()
    monkeypatch.setattr(text_encoder, "_can_read_spiece", lambda: False)
    with pytest.raises(MissingResourceError, match="hpdm\\[text\\]"):
        load_text_encoder(folder)


def test_missing_transformers_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # `import transformers` raises ImportError
    with pytest.raises(MissingResourceError, match="hpdm\\[text\\]"):
        text_encoder._transformers()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_half_precision_on_cuda(t5_folder, encoder):
    gpu = load_text_encoder(t5_folder, device="cuda", max_tokens=16)
    assert gpu.dtype == (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)
    assert gpu.fingerprint == encoder.fingerprint  # the encoder, not the precision it runs in
    tokens, mask = gpu.encode(CAPTIONS)
    reference, reference_mask = encoder.encode(CAPTIONS)
    assert tokens.device.type == "cpu" and tokens.dtype == torch.float32 and torch.equal(mask, reference_mask)
    # half precision through 2 layers: a relative error of a few units of bf16 rounding (2^-8), not O(1)
    error = (tokens - reference).norm() / reference.norm()
    assert error < 0.05, error


@pytest.mark.parametrize("command", ["encode-text", "random-text-encoder"])
def test_help_lists_options_as_flags(command):
    from typer.testing import CliRunner

    from hpdm_cli.app import app

    result = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0 and "--overwrite" in result.stdout and "RANDOM" in CliRunner().invoke(
        app, ["--help"], env={"COLUMNS": "200"}).stdout
    assert all("<bool>" not in line for line in result.stdout.splitlines() if "--overwrite" in line or "--json" in line)
