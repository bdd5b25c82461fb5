"""A TorchScript archive (the original OpenAI CLIP .pt format) is refused by name, with what to do."""
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from clipspace.errors import UnsafeCheckpointError
from clipspace.factory import check_safe_checkpoint, is_torchscript_archive

REPO = Path(__file__).resolve().parents[2]


class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(3, 2)

    def forward(self, x):
        return self.lin(x)


def save_torchscript(path: Path, how: str = "script") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.* is deprecated in favour of torch.export
        module = torch.jit.script(Tiny()) if how == "script" else torch.jit.trace(Tiny(), torch.zeros(1, 3))
        torch.jit.save(module, str(path))
    return path


@pytest.mark.parametrize("how", ["script", "trace"])
def test_a_torchscript_archive_is_refused_saying_what_it_is_and_what_to_do(tmp_path, how):
    path = save_torchscript(tmp_path / "ViT-B-32.pt", how)
    assert is_torchscript_archive(path)
    with pytest.raises(UnsafeCheckpointError) as e:
        check_safe_checkpoint(path)
    msg = str(e.value)
    assert str(path) in msg and "TorchScript archive" in msg and "holds code" in msg
    assert "load_clip('ViT-B-32', pretrained='openai')" in msg and "safetensors" in msg
    assert "torch.jit.load(path, map_location='cpu').state_dict()" in msg
    assert "weights_only" not in msg, "not torch.load's confusing message"


def test_plain_checkpoints_are_not_taken_for_torchscript(tmp_path):
    torch.save(Tiny().state_dict(), tmp_path / "sd.pt")
    (tmp_path / "notzip.bin").write_bytes(b"\x80\x02}q\x00.")  # a legacy pickle of {}
    assert not is_torchscript_archive(tmp_path / "sd.pt") and not is_torchscript_archive(tmp_path / "notzip.bin")
    check_safe_checkpoint(tmp_path / "sd.pt")  # tensors only: accepted


def test_load_clip_names_a_torchscript_file_in_the_clip_cache(tmp_path):
    """The real route: ViT-B-32/openai not in the (empty) hub cache, offline, and an OpenAI-format
    ViT-B-32.pt in ~/.cache/clip, where resolve_tag finds it."""
    save_torchscript(tmp_path / "home" / ".cache" / "clip" / "ViT-B-32.pt")
    env = {**os.environ, "HOME": str(tmp_path / "home"), "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": str(REPO)}
    env.pop("HF_HUB_CACHE", None)
    code = ("import clipspace\n"
            "try:\n    clipspace.load_clip('ViT-B-32', pretrained='openai')\n"
            "except clipspace.UnsafeCheckpointError as e:\n    print('REFUSED', e)\n")
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("REFUSED") and "ViT-B-32.pt: it is a TorchScript archive" in r.stdout, r.stdout + r.stderr
