"""TransformerLens, both ways (core/tl_interop.py).

Without TransformerLens: a file written by TransformerLens 3's grokking demo (tests/fixtures/tl3_grokking_demo_p13.pth,
made with TransformerLens 3.9 by tests/fixtures/make_tl3_demo.py) opens as a checkpoint, and every script runs on it;
files that do not fit our transformer are refused with one line. With TransformerLens 4 (requirements-interop.txt;
these tests skip without it): our transformer as a TransformerBridge built by TransformerLens itself gives the same
logits and cached activations, and comes back unchanged.
"""
import pickle
import sys
import types
from pathlib import Path

import pytest
import torch

import interpretability
import progress
import report
from config import Config
from core.checkpoint import CheckpointError, load_checkpoint, load_model, run_snapshots
from core.training import train
from core.tl_interop import SAFE_GLOBALS, TLFormatError, from_property_state, to_property_state
from core.transformer import Transformer

DEMO = Path(__file__).parent / "fixtures" / "tl3_grokking_demo_p13.pth"
P = 13
TL_CONFIG_MODULE = "transformer_lens.config.hooked_transformer_config"


def raw_demo() -> dict:
    """The fixture as plain data: its state dicts, losses, indices, and its config's fields as a dict."""
    with torch.serialization.safe_globals(SAFE_GLOBALS):
        ckpt = torch.load(DEMO, weights_only=True, map_location="cpu")
    return ckpt | {"config": dict(ckpt["config"].fields)}


def write_demo(path: Path, demo: dict, monkeypatch) -> Path:
    """Save `demo` as the demo notebook does, its config pickled as a HookedTransformerConfig (a stand-in class
    under TransformerLens 3's module path, so the file holds the same global a real one does)."""
    module = types.ModuleType(TL_CONFIG_MODULE)

    class HookedTransformerConfig:
        pass

    HookedTransformerConfig.__module__ = TL_CONFIG_MODULE
    HookedTransformerConfig.__qualname__ = "HookedTransformerConfig"
    module.HookedTransformerConfig = HookedTransformerConfig
    monkeypatch.setitem(sys.modules, TL_CONFIG_MODULE, module)
    config = HookedTransformerConfig()
    config.__dict__.update(demo["config"])
    torch.save(demo | {"config": config}, path)
    return path


def all_pairs(p=P):
    return torch.cartesian_prod(torch.arange(p), torch.arange(p)).unbind(1)


# ---------------------------------------------------------------- a demo file, without TransformerLens

@pytest.fixture(scope="module")
def demo_ckpt():
    return load_checkpoint(DEMO)


def test_a_demo_file_opens_as_a_checkpoint_with_its_split_and_snapshots(demo_ckpt):
    raw = raw_demo()
    assert demo_ckpt["config"]["p"] == P and demo_ckpt["config"]["arch"] == "transformer"
    assert torch.equal(demo_ckpt["train_idx"], raw["train_indices"].sort().values)
    assert torch.equal(demo_ckpt["test_idx"], raw["test_indices"].sort().values)
    assert [s["epoch"] for s in run_snapshots(DEMO)] == [e + 1 for e in raw["checkpoint_epochs"]]
    assert demo_ckpt["epoch"] == len(raw["train_losses"]) == 300


def test_the_history_measured_here_equals_the_demos_own_losses(demo_ckpt):
    """The demo logged its test loss after step e as test_losses[e - 1]; measured here on the snapshot of epoch e,
    on the split read from the file, it must be the same number (only the pairs' order of summation differs)."""
    raw, history = raw_demo(), demo_ckpt["history"]
    assert history["epoch"] == [50, 100, 150, 200, 250, 300]
    for epoch, loss in zip(history["epoch"], history["test_loss"]):
        assert loss == pytest.approx(raw["test_losses"][epoch - 1], rel=1e-6)
    a, b = all_pairs()
    model, _ = load_model(DEMO)
    with torch.no_grad():
        correct = model(a, b).argmax(-1) == (a + b) % P
    assert history["train_acc"][-1] == pytest.approx(correct[demo_ckpt["train_idx"]].double().mean().item())


def test_every_script_runs_on_a_demo_file(tmp_path, capsys):
    out = tmp_path / "r"
    assert interpretability.main(["--checkpoint", str(DEMO), "--results-dir", str(out), "--quiet", "--draws", "1"]) == 0
    assert interpretability.main(["--progress", "--checkpoint", str(DEMO), "--results-dir", str(out), "--quiet"]) == 0
    assert progress.main(["--checkpoint", str(DEMO), "--results-dir", str(out), "--quiet"]) == 0
    assert report.main(["--checkpoint", str(DEMO), "--results-dir", str(out)]) == 0
    page = (out / "report.html").read_text().split("</head>")[1]
    assert "Missing" not in page and "Could not read" not in page and 'id="epoch-slider-plot"' in page
    assert (out / "analysis_summary.json").is_file() and (out / "progress_measures.json").is_file()


def test_the_property_format_round_trips():
    torch.manual_seed(1)
    model = Transformer(P, d_model=16, n_heads=2, d_mlp=32)
    back = from_property_state(to_property_state(model), raw_demo()["config"])
    for (name, x), y in zip(model.state_dict().items(), back.state_dict().values()):
        assert torch.equal(x, y), name


@pytest.mark.parametrize("change, message", [
    (lambda d: d["config"].update(n_layers=2), "2 layers"),
    (lambda d: (d["config"].update(normalization_type="LN"), d["model"].update({"blocks.0.ln1.w": torch.ones(16)})),
     "LN normalization"),
    (lambda d: d["config"].update(d_vocab=P + 2), "vocabulary"),
    (lambda d: d["model"]["blocks.0.attn.b_Q"].fill_(0.1), "non-zero biases where our transformer has none"),
    (lambda d: d["model"].update({"blocks.0.attn.W_extra": torch.ones(1)}), "unknown"),
])
def test_a_demo_file_that_does_not_fit_is_refused_in_one_line(tmp_path, monkeypatch, capsys, change, message):
    demo = raw_demo()
    change(demo)
    path = write_demo(tmp_path / "demo.pth", demo, monkeypatch)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(path)
    assert interpretability.main(["--checkpoint", str(path), "--results-dir", str(tmp_path / "r"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "grokking-demo" in err and len(err.splitlines()) == 1


def test_a_demo_file_written_by_the_stand_in_equals_the_real_one(tmp_path, monkeypatch):
    """The refusal tests' files differ from TransformerLens's only where they change it."""
    path = write_demo(tmp_path / "same.pth", raw_demo(), monkeypatch)
    ours, real = load_checkpoint(path), load_checkpoint(DEMO)
    assert ours["history"] == real["history"] and ours["run_id"] == real["run_id"]


def test_other_globals_in_a_file_are_never_run(tmp_path):
    class Boom:
        def __reduce__(self):
            return (print, ("ran",))

    path = tmp_path / "evil.pth"
    path.write_bytes(pickle.dumps({"model": Boom()}, protocol=2))
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(path)


def test_a_toy_mlp_has_no_transformer_lens_form():
    from core.tl_interop import to_transformer_lens
    from model import ToyMLP
    with pytest.raises(TLFormatError, match="ToyMLP"):
        to_transformer_lens(ToyMLP(P))


# ---------------------------------------------------------------- TransformerLens 4 (optional extra)

@pytest.fixture(scope="module")
def tl():
    pytest.importorskip("transformer_lens", reason="TransformerLens is not installed: "
                        "pip install -r requirements-interop.txt")
    from core import tl_interop
    return tl_interop


def random_transformer(seed=0) -> Transformer:
    """Random weights and non-zero biases b_in, b_out, so every weight shows in the logits."""
    torch.manual_seed(seed)
    model = Transformer(P, d_model=16, n_heads=2, d_mlp=32)
    with torch.no_grad():
        model.b_in.normal_()
        model.b_out.normal_()
    return model.eval()


@pytest.fixture(scope="module")
def trained_transformer(tmp_path_factory) -> Transformer:
    """A transformer trained here (train.py's engine, a few seconds), as the scripts save it."""
    folder = tmp_path_factory.mktemp("trained")
    train(Config(arch="transformer", p=P, d_model=16, n_heads=2, d_mlp=32, lr=1e-2, epochs=60,
                 checkpoint_dir=str(folder / "c"), results_dir=str(folder / "r")), progress=False, plot=False)
    return load_model(folder / "c" / "model_final.pth")[0]


def tokens(a, b, p=P):
    return torch.stack([a, b, torch.full_like(a, p)], 1)


@pytest.mark.parametrize("which", ["trained", "random"])
def test_our_transformer_in_transformer_lens_gives_our_logits_and_cache(tl, trained_transformer, which):
    model = trained_transformer if which == "trained" else random_transformer()
    assert model.b_in.count_nonzero() and model.b_out.count_nonzero()  # every weight shows in the logits
    bridge = tl.to_transformer_lens(model)
    assert type(bridge).__name__ == "TransformerBridge"
    a, b = all_pairs()
    with torch.no_grad():
        their_logits, theirs = bridge.run_with_cache(tokens(a, b))
        our_logits, ours = model.run_with_cache(a, b)
    assert their_logits.shape == (P * P, 3, P)
    torch.testing.assert_close(their_logits[:, 2], our_logits, atol=1e-4, rtol=0)
    compared = 0
    for name, ours_value in ours.items():
        theirs_name = name if name in ("hook_embed", "hook_pos_embed") else f"blocks.0.{name}"
        # hidden_pre / hidden_post / logits: our names for the "=" position. attn.hook_attn_scores: TransformerLens
        # 4.3's native bridge caches the softmaxed pattern under that name too (its hook_pattern equals ours)
        if theirs_name not in theirs or name == "attn.hook_attn_scores":
            continue
        torch.testing.assert_close(theirs[theirs_name], ours_value, atol=1e-4, rtol=0, msg=name)
        compared += 1
    assert compared == 13


def test_a_bridge_comes_back_as_the_same_transformer(tl):
    model = random_transformer(1)
    back = tl.from_transformer_lens(tl.to_transformer_lens(model))
    for (name, x), y in zip(model.state_dict().items(), back.state_dict().values()):
        assert torch.equal(x, y), name


def test_the_demo_file_through_transformer_lens_own_converter_gives_the_same_model(tl):
    """TransformerLens 4 reads the demo's state dict with its own convert_tl_checkpoint; our reading of the same
    state dict must compute the same function."""
    from transformer_lens.config import TransformerBridgeConfig
    from transformer_lens.model_bridge import TransformerBridge
    from transformer_lens.utilities.tl_checkpoint_conversion import convert_tl_checkpoint
    raw = raw_demo()
    keep = ("n_layers", "d_model", "n_heads", "d_head", "d_mlp", "act_fn", "normalization_type", "d_vocab",
            "d_vocab_out", "n_ctx", "positional_embedding_type")
    cfg = TransformerBridgeConfig(**{k: raw["config"][k] for k in keep}, architecture="TransformerLensNative")
    bridge = TransformerBridge.boot_native(cfg)
    bridge.load_state_dict(convert_tl_checkpoint(raw["model"], cfg), strict=True)
    model, _ = load_model(DEMO)
    a, b = all_pairs()
    with torch.no_grad():
        torch.testing.assert_close(bridge.eval()(tokens(a, b))[:, 2], model(a, b), atol=1e-4, rtol=0)


def test_a_bridge_that_does_not_fit_is_refused(tl):
    from transformer_lens.config import TransformerBridgeConfig
    from transformer_lens.model_bridge import TransformerBridge
    cfg = TransformerBridgeConfig(n_layers=2, d_model=16, n_heads=2, d_head=8, d_mlp=32, act_fn="relu",
                                  normalization_type="LN", d_vocab=P + 1, d_vocab_out=P, n_ctx=3,
                                  architecture="TransformerLensNative")
    with pytest.raises(TLFormatError, match="2 layers.*LN normalization"):
        tl.from_transformer_lens(TransformerBridge.boot_native(cfg))
