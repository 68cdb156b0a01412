import pytest
import torch

from core.checkpoint import CheckpointError, load_checkpoint, load_model, save_checkpoint
from model import ToyMLP


def test_round_trip_loads_with_weights_only(tmp_path):
    torch.manual_seed(0)
    m = ToyMLP(7, 4, 8)
    path = tmp_path / "c.pth"
    save_checkpoint(path, config={"model": m.config(), "lr": 0.1}, model=m.state_dict(), epoch=3,
                    history={"epoch": [1, 2, 3]}, train_idx=torch.arange(5), test_idx=torch.arange(5, 49))
    assert not list(tmp_path.glob("*.tmp"))  # the temporary file was renamed away
    raw = torch.load(path, weights_only=True)
    assert raw["epoch"] == 3
    loaded, ckpt = load_model(path)
    for k, v in m.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v)
    assert ckpt["config"]["lr"] == 0.1


def test_missing_foreign_corrupt_and_mismatched_files(tmp_path):
    with pytest.raises(CheckpointError, match="python train.py"):
        load_checkpoint(tmp_path / "none.pth")
    torch.save({"state_dict": {}}, tmp_path / "foreign.pth")
    with pytest.raises(CheckpointError, match="not a checkpoint written by"):
        load_checkpoint(tmp_path / "foreign.pth")
    (tmp_path / "corrupt.pth").write_bytes(b"not a zip file at all")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(tmp_path / "corrupt.pth")
    m = ToyMLP(7, 4, 8)
    save_checkpoint(tmp_path / "bad.pth", config={"model": {"arch": "mlp", "p": 7, "d_embed": 5}},
                    model=m.state_dict())
    with pytest.raises(CheckpointError, match="does not fit"):
        load_model(tmp_path / "bad.pth")
