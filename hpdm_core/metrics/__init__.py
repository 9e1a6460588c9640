"""Evaluation metrics: FVD (I3D), video Inception Score (C3D), Fréchet distance, and a classifier
trained on your own data (class accuracy and FD of generated videos, no download)."""

from hpdm_core.metrics.c3d import C3D, C3DProbs, random_c3d
from hpdm_core.metrics.classifier import (VideoClassifier, classifier_evaluation, classifier_scores, heldout_split,
                                          heldout_videos, load_classifier, train_classifier)
from hpdm_core.metrics.detectors import load_c3d, load_i3d, random_i3d_detector
from hpdm_core.metrics.frechet import FeatureStats, fid_from_stats, frechet_distance
from hpdm_core.metrics.fvd import PROTOCOLS, compute_feature_stats, compute_fvd, compute_is, evaluate
from hpdm_core.metrics.i3d import I3DFeatures, InceptionI3d, random_i3d
from hpdm_core.metrics.inception_score import inception_score
from hpdm_core.metrics.options import EvalOptions

__all__ = [
    "C3D", "C3DProbs", "EvalOptions", "FeatureStats", "I3DFeatures", "InceptionI3d", "PROTOCOLS", "VideoClassifier",
    "classifier_evaluation", "classifier_scores", "compute_feature_stats", "compute_fvd", "compute_is", "evaluate",
    "fid_from_stats", "frechet_distance", "heldout_split", "heldout_videos", "inception_score", "load_c3d",
    "load_classifier", "load_i3d", "random_c3d", "random_i3d", "random_i3d_detector", "train_classifier",
]
