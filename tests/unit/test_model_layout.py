"""`--model-repository DIR --model-name NAME`: the three shapes KServe's storage initializer can
leave in /mnt/models, and the repository pyserver serves for each (pyserver/cli/model_layout.py).
The served end to end case is tests/e2e/test_serve_model_name.py."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from pyserver.cli import model_layout
from pyserver.cli.model_layout import Layout, ModelLayoutError, detect, model_repository
from pyserver.config import load_config
from tests.conftest import ENGINES


def digits_folder(tmp_path: Path, name: str = "storage") -> Path:
    """A copy of the bundled digits model's folder, as the storage initializer would leave it."""
    folder = tmp_path / name
    shutil.copytree(ENGINES / "digits", folder)
    return folder


def one_file(tmp_path: Path, filename: str, content: bytes = b"model bytes") -> Path:
    folder = tmp_path / "storage"
    folder.mkdir()
    (folder / filename).write_bytes(content)
    return folder


# --- which shape --------------------------------------------------------------------------


def test_the_bundled_repository_is_a_repository() -> None:
    assert detect(ENGINES).layout is Layout.REPOSITORY


def test_an_empty_folder_is_an_empty_repository(tmp_path: Path) -> None:
    assert detect(tmp_path).layout is Layout.REPOSITORY


@pytest.mark.parametrize("contents", [
    ["config.toml", "1/model.onnx"],
    ["config.pbtxt", "1/model.onnx"],  # Triton's config
    ["config.toml"],                   # identity-like: a config and an empty 1/ is enough
    ["1/model.onnx"],                  # no config: auto-complete reads the tensors
    ["3/model.plan", "7/model.plan"],
])
def test_a_model_folder(tmp_path: Path, contents: list[str]) -> None:
    for item in contents:
        (tmp_path / item).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / item).write_text("")
    assert detect(tmp_path).layout is Layout.MODEL_FOLDER


def test_a_leading_zero_or_a_name_is_not_a_version_folder(tmp_path: Path) -> None:
    (tmp_path / "01").mkdir()
    (tmp_path / "latest").mkdir()
    assert detect(tmp_path).layout is Layout.REPOSITORY


@pytest.mark.parametrize("filename", ["model.onnx", "model.plan", "model.pt", "model.pt2",
                                      "resnet50.onnx", "resnet50-fp16.plan"])
def test_a_bare_model_file(tmp_path: Path, filename: str) -> None:
    folder = one_file(tmp_path, filename)
    (folder / "README.md").write_text("other files are ignored")
    (folder / ".storage-initializer").write_text("hidden files too")
    detected = detect(folder)
    assert detected.layout is Layout.MODEL_FILE
    assert detected.model_file == folder / filename


def test_the_canonical_name_wins_over_other_onnx_files(tmp_path: Path) -> None:
    folder = one_file(tmp_path, "model.onnx")
    (folder / "model-quantized.onnx").write_bytes(b"other")
    assert detect(folder).model_file == folder / "model.onnx"


@pytest.mark.parametrize("names", [["model.onnx", "model.plan"], ["a.onnx", "b.onnx"]])
def test_several_candidate_files_are_refused(tmp_path: Path, names: list[str]) -> None:
    for name in names:
        (tmp_path / name).write_bytes(b"x")
    with pytest.raises(ModelLayoutError, match="several") as info:
        detect(tmp_path)
    assert all(name in str(info.value) for name in names)


def test_model_folders_make_a_repository_even_beside_a_stray_file(tmp_path: Path) -> None:
    shutil.copytree(ENGINES / "digits", tmp_path / "digits")
    (tmp_path / "notes.onnx").write_bytes(b"x")
    assert detect(tmp_path).layout is Layout.REPOSITORY


# --- the repository served -------------------------------------------------------------------


def test_a_repository_is_served_as_it_is(tmp_path: Path) -> None:
    with model_repository(ENGINES, None) as root:
        assert root == ENGINES
    with model_repository(ENGINES, "digits") as root:
        assert root == ENGINES


def test_a_repository_without_the_named_model_is_a_clear_error() -> None:
    with pytest.raises(ModelLayoutError) as info, model_repository(ENGINES, "mnist"):
        pass
    message = str(info.value)
    assert "no folder named mnist" in message
    assert "add_sub, digits, identity, identity_bytes" in message


def test_a_model_folder_is_linked_under_the_model_name(tmp_path: Path) -> None:
    folder = digits_folder(tmp_path)
    with model_repository(folder, "digits") as root:
        assert root != folder and root.is_dir()
        assert sorted(p.name for p in root.iterdir()) == ["digits"]
        assert (root / "digits").is_symlink()
        assert (root / "digits").resolve() == folder.resolve()
        # The loader takes the linked folder as the model "digits" (its name is the link's).
        config = load_config(root / "digits")
        assert config.name == "digits" and config.backend == "onnxruntime"
    assert not root.exists()
    assert (folder / "1" / "model.onnx").is_file(), "cleaning up removed the model's files"


def test_the_model_name_need_not_be_the_folder_name(tmp_path: Path) -> None:
    folder = digits_folder(tmp_path, name="mnt-models")
    with model_repository(folder, "mnist") as root:
        assert load_config(root / "mnist").name == "mnist"


def test_without_a_model_name_the_folder_names_the_model(tmp_path: Path) -> None:
    folder = digits_folder(tmp_path, name="digits")
    with model_repository(folder, None) as root:
        assert [p.name for p in root.iterdir()] == ["digits"]


@pytest.mark.parametrize(("filename", "text"), [
    ("config.toml", 'name = "digits"\nbackend = "onnxruntime"\n'),
    ("config.pbtxt", 'name: "digits"\nplatform: "onnxruntime_onnx"\n'),
    ("config.pbtxt", "# a comment\nname : 'digits'\n"),
])
def test_a_config_naming_another_model_is_refused(tmp_path: Path, filename: str, text: str) -> None:
    folder = tmp_path / "storage"
    (folder / "1").mkdir(parents=True)
    (folder / filename).write_text(text)
    with pytest.raises(ModelLayoutError) as info, model_repository(folder, "mnist"):
        pass
    assert f"{folder / filename} names the model 'digits'" in str(info.value)
    assert "'mnist'" in str(info.value)


def test_names_inside_a_pbtxt_are_not_the_model_name(tmp_path: Path) -> None:
    folder = tmp_path / "storage"
    (folder / "1").mkdir(parents=True)
    (folder / "config.pbtxt").write_text(
        'platform: "onnxruntime_onnx"\n'
        'input [ { name: "pixels" data_type: TYPE_FP32 dims: [ 64 ] } ]\n'
        '# name: "commented"\n'
        'output { name: "label" }\n'
    )
    assert model_layout.declared_name(folder) is None
    with model_repository(folder, "mnist") as root:
        assert (root / "mnist").resolve() == folder.resolve()
    (folder / "config.pbtxt").write_text('input [ { name: "pixels" } ]\nname: "mnist"\n')
    assert model_layout.declared_name(folder) == (folder / "config.pbtxt", "mnist")


@pytest.mark.parametrize(("filename", "served_as"), [
    ("model.onnx", "model.onnx"), ("model.plan", "model.plan"), ("model.pt", "model.pt"),
    ("model.pt2", "model.pt2"), ("resnet50.onnx", "model.onnx"), ("engine-fp16.plan", "model.plan"),
])
def test_a_bare_file_becomes_version_1(tmp_path: Path, filename: str, served_as: str) -> None:
    folder = one_file(tmp_path, filename, b"\x08\x07onnx bytes")
    with model_repository(folder, "resnet") as root:
        version = root / "resnet" / "1"
        assert [p.name for p in version.iterdir()] == [served_as]
        assert (version / served_as).is_symlink()
        assert (version / served_as).read_bytes() == b"\x08\x07onnx bytes"
    assert not root.exists()
    assert (folder / filename).read_bytes() == b"\x08\x07onnx bytes"


def test_the_temporary_repository_is_removed_on_an_error_too(tmp_path: Path) -> None:
    folder = one_file(tmp_path, "model.onnx")
    with pytest.raises(RuntimeError), model_repository(folder, "m") as root:
        raise RuntimeError("serving failed")
    assert not root.exists()


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "..\\x"])
def test_a_name_that_cannot_be_a_folder_is_refused(tmp_path: Path, name: str) -> None:
    folder = one_file(tmp_path, "model.onnx")
    with pytest.raises(ModelLayoutError, match="cannot name a model folder"), \
            model_repository(folder, name):
        pass


def test_no_writable_temporary_folder_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = one_file(tmp_path, "model.onnx")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "missing"))
    with pytest.raises(ModelLayoutError, match="set TMPDIR to a writable folder"), \
            model_repository(folder, "m"):
        pass


def test_prepare_keeps_the_repository_until_exit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    registered = []
    monkeypatch.setattr(model_layout.atexit, "register", registered.append)
    folder = one_file(tmp_path, "model.onnx")
    root = model_layout.prepare(folder, "m")
    assert (root / "m" / "1" / "model.onnx").is_file()
    assert len(registered) == 1
    registered[0]()  # what the interpreter runs at exit
    assert not root.exists() and (folder / "model.onnx").is_file()


# --- the command line ----------------------------------------------------------------------


def test_serve_refuses_a_missing_model_before_listening() -> None:
    # A subprocess: main() configures the process's logging, which a test should not keep.
    done = subprocess.run(
        [sys.executable, "-m", "pyserver", "serve", "--model-repository", str(ENGINES),
         "--model-name", "mnist", "--http-port", "0"],
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 1
    assert done.stderr.startswith("pyserver: --model-name mnist:"), done.stderr


def test_model_name_flag() -> None:
    from pyserver.cli.main import build_parser

    parse = build_parser().parse_args
    assert parse(["serve"]).model_name is None
    assert parse(["serve", "--model-name", "mnist"]).model_name == "mnist"
    assert parse(["serve", "--model-name=mnist"]).model_name == "mnist"  # as KServe passes it
    # The image's entrypoint names /models; a later --model-repository (KServe's) wins.
    args = parse(["serve", "--model-repository", "/models", "--model-repository", "/mnt/models"])
    assert args.model_repository == Path("/mnt/models")


def test_tempdir_is_honoured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    os.mkdir(tmp_path / "tmp")
    folder = one_file(tmp_path, "model.onnx")
    with model_repository(folder, "m") as root:
        assert root.parent == tmp_path / "tmp"
