"""`LightEmbeddings`: the local sentence-transformers model run without torch, transformers or
sentence-transformers, for the question path: word pieces by `tokenizers`, the transformer by OpenVINO in float32
from the model bf16.py converted once into the cache folder, pooling and normalisation in numpy as the model's
own modules.json says. Ready in well under a second where the full stack takes 10-15 s to import."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from langchain_core.embeddings import Embeddings

from rag.embeddings import bf16

POOLINGS = ("cls_token", "mean_tokens", "max_tokens")


@dataclass(frozen=True)
class Recipe:
    """What sentence-transformers does around the transformer, read from the model folder."""

    max_tokens: int  # max_seq_length: word pieces read, [CLS] and [SEP] included
    lower_case: bool
    pooling: str  # one of POOLINGS
    tokenizer: Path


def read_recipe(model_dir: Path) -> Recipe | None:
    """The recipe of a model that is a Transformer, one Pooling mode and an optional Normalize; None for anything
    else (a Dense layer, several pooling modes, files missing), which only the full model runs."""
    try:
        modules = json.loads((model_dir / "modules.json").read_text())
        kinds = [str(m["type"]).rsplit(".", 1)[-1] for m in modules]
        if kinds[:2] != ["Transformer", "Pooling"] or any(k != "Normalize" for k in kinds[2:]):
            return None
        transformer = model_dir / modules[0].get("path", "")
        config = json.loads((transformer / "sentence_bert_config.json").read_text())
        pooling = json.loads((model_dir / modules[1]["path"] / "config.json").read_text())
        modes = [k.removeprefix("pooling_mode_") for k, v in pooling.items() if k.startswith("pooling_mode_") and v]
        if len(modes) != 1 or modes[0] not in POOLINGS or not (transformer / "tokenizer.json").is_file():
            return None
        return Recipe(int(config["max_seq_length"]), bool(config.get("do_lower_case", False)), modes[0],
                      transformer / "tokenizer.json")
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return None


def pool(tokens, mask, mode: str):
    """Sentence vectors from token vectors (batch, tokens, dims) as sentence-transformers' Pooling does them."""
    import numpy as np

    if mode == "cls_token":
        return tokens[:, 0]
    m = mask[..., None].astype(np.float32)
    if mode == "max_tokens":
        return np.where(m > 0, tokens, -1e9).max(axis=1)
    return (tokens * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1e-9)


class LightEmbeddings(Embeddings):
    """The local model as a LangChain `Embeddings`, in float32, normalised: the vectors of sentence-transformers'
    `encode` (cosine >= 0.9999, tests/test_embeddings.py) without importing it.

    The OpenVINO model is read from `cache_dir`; where it is missing (a question before any ingest on a CPU
    without bfloat16, or a new cache folder) it is converted from the full model once, which imports torch and
    sentence-transformers that one time (10-30 s) and saves it for every later process.
    """

    def __init__(self, model_dir: Path, name: str, recipe: Recipe, batch_size: int = 32,
                 cache_dir: Path | None = None) -> None:
        from tokenizers import Tokenizer

        ov = bf16.import_openvino()
        self.name, self.model_dir, self.batch_size, self.recipe = name, Path(model_dir), batch_size, recipe
        self.max_tokens = recipe.max_tokens - 2  # [CLS] and [SEP] take two of the window
        self.tokenizer = Tokenizer.from_file(str(recipe.tokenizer))
        self.tokenizer.no_padding()  # padded per batch below; a tokenizer.json may ask for a fixed length
        self.tokenizer.enable_truncation(recipe.max_tokens)
        path = None if cache_dir is None else bf16.ir_path(self.model_dir, Path(cache_dir), ov.get_version())
        model = str(path) if path is not None and path.is_file() else bf16.convert_model_folder(self.model_dir, cache_dir)
        # float32 always: OpenVINO would pick bfloat16 by itself on a CPU with AMX.
        config = {"INFERENCE_PRECISION_HINT": "f32"}
        if cache_dir is not None:
            # OpenVINO keeps the compiled model there (keyed by model, device and settings): compiling the next
            # time takes about half as long.
            config["CACHE_DIR"] = str(Path(cache_dir) / "openvino-compiled")
        self.run = bf16.InferRequests(ov.Core().compile_model(model, "CPU", config))

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        import numpy as np

        if not texts:
            return []
        prepared = [str(t).strip() for t in texts]  # as sentence-transformers' Transformer.tokenize does
        encoded = self.tokenizer.encode_batch([t.lower() for t in prepared] if self.recipe.lower_case else prepared)
        order = sorted(range(len(texts)), key=lambda i: -len(encoded[i].ids))  # like lengths batched together
        out = None
        for start in range(0, len(texts), self.batch_size):
            idx = order[start : start + self.batch_size]
            width = len(encoded[idx[0]].ids)
            # Padding is masked out of attention and pooling: its id does not matter.
            ids, types, mask = (np.zeros((len(idx), width), dtype=np.int64) for _ in range(3))
            for row, i in enumerate(idx):
                n = len(encoded[i].ids)
                ids[row, :n], types[row, :n], mask[row, :n] = encoded[i].ids, encoded[i].type_ids, 1
            tokens = self.run({"input_ids": ids, "token_type_ids": types, "attention_mask": mask})
            vectors = pool(tokens.astype(np.float32), mask, self.recipe.pooling)
            out = np.empty((len(texts), vectors.shape[1]), dtype=np.float32) if out is None else out
            out[idx] = vectors
        return (out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)).tolist()

    def embed_query(self, text: str) -> list[float]:
        return self.embed_documents([text])[0]
