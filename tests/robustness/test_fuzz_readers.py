"""Fuzzing the readers of users' text files: the CSV manifest and the YAML settings file.

Any input gives either a result or one :class:`PatchvaeError` whose message is one line (the
command line turns it into one line and exit 2), never another exception.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from patchvae.config import ExtractConfig, MnistStudyConfig, PatchTrainConfig, load_yaml_config
from patchvae.data.volumes import discover_cases
from patchvae.errors import PatchvaeError
from patchvae.studies.compare import CompareConfig
from tests.conftest import Cli

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

cells = st.sampled_from(
    ["case_id", "DWI", "FLAIR", "lesion_mask", "brain_mask", "mask", "a.nii.gz", "", " ", "é",
     '"', '"a,b"', "\ufeff", "\x00", "x" * 300, "../b.nii", "c1"]
)  # fmt: skip
csv_text = st.lists(st.lists(cells, max_size=6), max_size=6).map(
    lambda rows: "\n".join(",".join(row) for row in rows)
)
raw = st.one_of(st.binary(max_size=300), st.text(max_size=300), csv_text)


# one scratch folder for every example, removed when the test process ends (a folder per
# example under /tmp was left behind by each run)
_SCRATCH = tempfile.TemporaryDirectory(prefix="patchvae-fuzz-")


def _write(data: bytes | str, name: str) -> Path:
    path = Path(tempfile.mkdtemp(dir=_SCRATCH.name)) / name
    if isinstance(data, str):
        path.write_text(data, encoding="utf-8", errors="surrogatepass")
    else:
        path.write_bytes(data)
    return path


def _one_line_or_result(call: object) -> None:
    try:
        call()  # type: ignore[operator]
    except PatchvaeError as exc:
        message = str(exc)
        assert message and "\n" not in message and "\r" not in message, repr(message)


@FUZZ
@given(data=raw, modalities=st.sampled_from([["DWI"], ["DWI", "FLAIR"]]))
def test_manifest_reader(data: bytes | str, modalities: list[str]) -> None:
    try:
        path = _write(data, "m.csv")
    except UnicodeEncodeError:
        return
    _one_line_or_result(lambda: discover_cases(path, "csv", modalities))


settings_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(allow_subnormal=False),
        st.text(max_size=20),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)
known_keys = st.sampled_from(
    ["patches", "model", "train", "epochs", "seed", "dataset", "models", "name", "digits",
     "latent_dim", "val_cases", "layout", "modalities", "spacing"]
)  # fmt: skip
settings_docs = st.dictionaries(known_keys, settings_values, max_size=5).map(
    lambda d: yaml.safe_dump(d, allow_unicode=True)
)
yaml_text = st.one_of(
    settings_docs,
    st.text(alphabet="abc:{}[],-&*!|>'\"#\n \t1.", max_size=200),
    st.binary(max_size=200),
)


@FUZZ
@given(
    data=yaml_text,
    cls=st.sampled_from([PatchTrainConfig, MnistStudyConfig, CompareConfig, ExtractConfig]),
)
def test_settings_reader(data: bytes | str, cls: type) -> None:
    try:
        path = _write(data, "s.yaml")
    except UnicodeEncodeError:
        return
    _one_line_or_result(lambda: load_yaml_config(cls, path))


@pytest.mark.parametrize(
    "text",
    ["train: [", "!!python/object:os.system ls", "a: b\n\tc: d", "\x00", "- 1\n- 2", "x: *y"],
)
def test_settings_file_on_the_command_line(tmp_path: Path, cli: Cli, text: str) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(text)
    code, _, err = cli(["train", "--config", str(path), "--out", str(tmp_path / "r")])
    assert code == 2 and len(err.strip().splitlines()) == 1 and str(path) in err, err
    assert not (tmp_path / "r").exists()
