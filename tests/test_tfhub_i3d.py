"""The real reference: the TF-Hub I3D graph (deepmind/i3d-kinetics-400/1, shipped without weights
in shared/reference-data) given random weights, against our converter and our I3D."""

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from hpdm_core.metrics.detectors import load_i3d
from hpdm_core.metrics.i3d import InceptionI3d

pytestmark = pytest.mark.tfhub

GRAPH = Path(__file__).resolve().parents[1].parent / "shared" / "reference-data" / "tfhub-i3d-kinetics-400"
if not GRAPH.exists():
    GRAPH = Path("/work/shared/reference-data/tfhub-i3d-kinetics-400")

# Runs in a child process: TensorFlow and torch stay in separate processes.
TF_SIDE = textwrap.dedent("""
    import shutil, sys
    from pathlib import Path
    import numpy as np
    import tensorflow as tf
    from tensorflow.core.protobuf import saved_model_pb2

    def import_tensorflow_hub():
        # tensorflow_hub 0.16 imports pkg_resources (gone from setuptools 81) only to compare versions.
        try:
            import pkg_resources  # noqa: F401
        except ModuleNotFoundError:
            import types
            from packaging.version import parse
            sys.modules["pkg_resources"] = types.SimpleNamespace(parse_version=parse)
        import tensorflow_hub
        return tensorflow_hub

    graph_dir, module_dir, x_path, y_path = map(Path, sys.argv[1:5])
    saved = saved_model_pb2.SavedModel()
    saved.ParseFromString((graph_dir / "saved_model.pb").read_bytes())
    meta = next(m for m in saved.meta_graphs if not m.meta_info_def.tags)
    rng = np.random.default_rng(0)
    with tf.Graph().as_default(), tf.compat.v1.Session() as sess:
        tf.compat.v1.train.import_meta_graph(meta)
        variables = tf.compat.v1.global_variables()
        sess.run(tf.compat.v1.global_variables_initializer())
        # Random values everywhere (the initializers leave batch-norm statistics at 0/1 and the
        # activations shrinking), so a transposed or misplaced tensor cannot go unnoticed.
        for v in variables:
            shape, name = v.shape.as_list(), v.op.name
            if name.endswith("conv_3d/w"):
                fan_in = int(np.prod(shape[:-1]))
                value = rng.normal(0, np.sqrt(2.0 / fan_in), shape)
            elif name.endswith("moving_variance"):
                value = rng.uniform(0.5, 1.5, shape)
            else:
                value = rng.normal(0, 0.1, shape)
            v.load(value.astype(np.float32), sess)
        tf.compat.v1.train.Saver(variables).save(sess, str(module_dir / "variables" / "variables"),
                                                 write_meta_graph=False, write_state=False)
    for name in ("saved_model.pb", "tfhub_module.pb"):
        shutil.copy(graph_dir / name, module_dir / name)
    hub = import_tensorflow_hub()
    module = hub.load(str(module_dir))
    x = np.load(x_path)
    y = module.signatures["default"](rgb_input=tf.constant(x))["default"].numpy()
    np.save(y_path, y)
""")


@pytest.fixture(scope="module")
def tfhub_module(tmp_path_factory):
    pytest.importorskip("tensorflow")
    tmp = tmp_path_factory.mktemp("tfhub")
    module_dir = tmp / "i3d-kinetics-400"
    (module_dir / "variables").mkdir(parents=True)
    rng = np.random.default_rng(1)
    x = rng.uniform(-1, 1, (1, 10, 224, 224, 3)).astype(np.float32)  # [B, T, H, W, 3] in [-1, 1]
    np.save(tmp / "x.npy", x)
    proc = subprocess.run([sys.executable, "-c", TF_SIDE, str(GRAPH), str(module_dir), str(tmp / "x.npy"),
                           str(tmp / "y.npy")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return module_dir, x, np.load(tmp / "y.npy")


@pytest.fixture(scope="module")
def converted(tfhub_module, tmp_path_factory):
    """`hpdm convert-i3d` run on the module, as a user would."""
    module_dir, _, _ = tfhub_module
    out = tmp_path_factory.mktemp("converted") / "i3d.pt"
    proc = subprocess.run([sys.executable, "-m", "hpdm_cli", "convert-i3d", str(module_dir), "--out", str(out),
                           "--json"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["variables"] == 230
    return out


def test_converted_i3d_matches_tfhub_graph(tfhub_module, converted):
    _, x, y_tf = tfhub_module
    assert y_tf.shape == (1, 400) and y_tf.std() > 0.1  # activations survived the depth
    net = InceptionI3d()
    net.load_state_dict(torch.load(converted, weights_only=True), strict=True)
    with torch.no_grad():
        y = net.eval()(torch.from_numpy(x).permute(0, 4, 1, 2, 3)).numpy()
    assert np.abs(y - y_tf).max() < 1e-4 * max(1.0, float(np.abs(y_tf).max()))


def test_tfhub_folder_is_a_detector(tfhub_module, converted):
    module_dir, _, _ = tfhub_module
    videos = torch.randint(0, 256, (1, 9, 32, 40, 3), dtype=torch.uint8)
    from_folder = load_i3d(module_dir, resize="tf")(videos)
    from_file = load_i3d(converted, resize="tf")(videos)
    assert from_folder.shape == (1, 400)
    assert torch.equal(from_folder, from_file)


def test_missing_variables_folder_is_a_missing_resource(tmp_path):
    bare = tmp_path / "module"
    bare.mkdir()
    for name in ("saved_model.pb", "tfhub_module.pb"):
        shutil.copy(GRAPH / name, bare / name)
    proc = subprocess.run([sys.executable, "-m", "hpdm_cli", "convert-i3d", str(bare), "--out",
                           str(tmp_path / "x.pt")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 3
    assert "variables" in proc.stderr
