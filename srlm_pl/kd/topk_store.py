"""On-disk store of a teacher's top-k next-token log-probs per completion token (offline KD): format, write,
read, validate.

Layout of a store folder (format ``srlm_pl.topk_teacher_logits``, ``format_version`` 2)::

    manifest.json                 the key (below), per split: data fingerprint, shard list, token counts
    train-00000.safetensors ...   one or more shards per split

Each shard holds, for its examples in order: ``ids`` int32 ``[T, k]`` (the teacher's top-k token ids, most
likely first), ``logprobs`` ``[T, k]`` (their log-probs at the store's temperature; float16 by default, float32 on
request), ``tail_log`` float32 ``[T]`` (the log of the teacher's probability of every token outside the top-k:
``logsumexp`` of those logits minus the full ``logsumexp``, so it never underflows; ``-inf`` only when k = V),
``targets`` int32 ``[T]`` (the completion token each row predicts, to verify a batch against) and
``offsets`` int64 ``[E + 1]`` (example ``e`` owns rows ``offsets[e]:offsets[e+1]``); the shard's metadata lists
the example ids. ``T`` counts completion tokens only (the positions ``DistillModule`` trains on).

Why float16 log-probs: they are the bulk of the store (k values per token) and float16 halves them versus
float32; its relative spacing is 2**-11, so a log-prob in [-16, 0) is off by at most 2**-7 in absolute terms,
i.e. the probability by under 1% for tokens below e**-8 and under 0.05% for the likely ones (|log p| < 1),
far below the noise of training on a different batch. The tail's log-mass is computed from the teacher's logits
up-cast to float32 (a bfloat16 teacher's logits carry bfloat16 rounding: about 3 significant digits) and kept in
float32 (one value per token), so a tail of any size, however small, is kept to float32 precision of its log
(not exactly). Float16 log-probs plus the tail do not sum exactly to 1 (the float16 rounding above; the loss
does not renormalise them). ``float32`` makes the stored rows bit-equal to a float32 recomputation (used by the
tests).

Version 2 (this one) stores the tail's log-mass (version 1 stored the mass itself, which underflowed to 0 far
below the normaliser) and the teacher's full record (``teacher_record``: its settings, config and weights
fingerprints); a version-1 store is refused with the command that rebuilds it.

The key is (teacher, tokenizer, data, template, k, temperature): the teacher's record (``teacher_record``),
sha256 fingerprints of the tokenizer's vocabulary and special ids, of each split's rows (id, question, solution,
answer, after the length policy) and of its tokenized ``input_ids`` (``tokens_fingerprint``), and of the prompt
template (plus the chat template), and k. ``TopKStore`` checks a training
run's tokenizer, data and template against it and refuses a mismatch with an error naming both sides; every
batch is also checked token by token against the stored completion ids.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

FORMAT = "srlm_pl.topk_teacher_logits"
FORMAT_VERSION = 2
MANIFEST = "manifest.json"
LOGPROB_DTYPES = {"float16": torch.float16, "float32": torch.float32}
ROW_FIELDS = ("id", "question", "solution", "answer")


class StoreMismatchError(ValueError):
    """A teacher-logits store that does not belong to this run (tokenizer, data, template, temperature)."""


# ------------------------------------------------------------------------------------------------ fingerprints
def _sha(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def tokenizer_fingerprint(tokenizer: Any) -> dict[str, Any]:
    """Name, token count and a sha256 of the vocabulary and the eos/bos/pad ids."""
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    special = {n: getattr(tokenizer, n, None) for n in ("eos_token_id", "bos_token_id", "pad_token_id")}
    return {"name": str(getattr(tokenizer, "name_or_path", "")), "vocab_size": len(tokenizer),
            "sha256": _sha({"vocab": vocab, "special": special, "len": len(tokenizer)})}


def rows_fingerprint(rows: Iterable[dict[str, Any]]) -> str:
    """sha256 of the rows' ``id, question, solution, answer`` in order."""
    h = hashlib.sha256()
    for r in rows:
        h.update(json.dumps([r.get(f) for f in ROW_FIELDS], ensure_ascii=False).encode())
        h.update(b"\n")
    return h.hexdigest()


def dataset_fingerprint(dataset: Any) -> tuple[str, int]:
    """``rows_fingerprint`` and row count of a tokenized split (a ``datasets.Dataset`` from ``SFTDataModule``)."""
    rows = dataset.select_columns(list(ROW_FIELDS)).to_list()
    return rows_fingerprint(rows), len(rows)


def tokens_fingerprint(dataset: Any) -> str:
    """sha256 of a tokenized split's ``input_ids`` (prompt + completion) row by row, in order: catches tokenizer
    settings that change the tokens without changing the vocabulary or the rows (merges, normalisation)."""
    h = hashlib.sha256()
    for batch in dataset.select_columns(["input_ids"]).iter(batch_size=1024):
        for ids in batch["input_ids"]:
            h.update(json.dumps(list(ids)).encode())
            h.update(b"\n")
    return h.hexdigest()


def template_fingerprint(template: Any, tokenizer: Any) -> dict[str, Any]:
    """The prompt template's settings and a sha256 of them plus the tokenizer's chat template."""
    config = asdict(template)
    return {"config": config, "sha256": _sha({"template": config,
                                              "chat": getattr(tokenizer, "chat_template", None) or ""})}


TEACHER_FIELDS = ("name_or_path", "gguf_file", "tokenizer", "dtype", "quantization", "layer_stride", "num_layers",
                  "revision")


def _local(path: str | None) -> str | None:
    """A path that exists locally, resolved (the same folder given relatively or absolutely compares equal)."""
    return str(Path(path).resolve()) if path and Path(path).exists() else path


def weights_fingerprint(name_or_path: str, revision: str | None = None) -> dict[str, Any]:
    """What identifies the teacher's weights: for a local folder a sha256 over its ``*.safetensors`` files (else its
    ``*.bin`` / ``*.gguf`` files; names and contents, read in 1 MiB chunks), ``weights_sha256``; for a hub id the
    commit of the locally cached snapshot of ``revision`` (``hub_commit``, looked up offline; ``None`` when it is
    not cached, in which case retrained weights under the same id and revision are not detected)."""
    folder = Path(name_or_path)
    if folder.is_dir():
        files = (sorted(folder.glob("*.safetensors")) or sorted(folder.glob("*.bin")) or sorted(folder.glob("*.gguf")))
        h = hashlib.sha256()
        for f in files:
            h.update(f.name.encode() + b"\0")
            with f.open("rb") as fh:
                while chunk := fh.read(1 << 20):
                    h.update(chunk)
        return {"weights_sha256": h.hexdigest() if files else None}
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(name_or_path, "config.json", revision=revision)
    except Exception:  # noqa: BLE001 -- not a hub id (e.g. the tiny preset): nothing to record
        cached = None
    return {"hub_commit": Path(cached).parent.name if isinstance(cached, str) else None}


def teacher_record(spec: Any) -> dict[str, Any]:
    """The teacher's record in the manifest: the ``ModelSpec`` fields that change its numbers (``TEACHER_FIELDS``;
    local paths resolved), a sha256 of its ``config.json`` (local folders) and ``weights_fingerprint``. Both the
    store writer and ``DistillModule`` build it with this function, so a configured teacher is compared field by
    field."""
    record = {k: getattr(spec, k, None) for k in TEACHER_FIELDS}
    record["name_or_path"], record["tokenizer"] = _local(record["name_or_path"]), _local(record["tokenizer"])
    config = Path(spec.name_or_path) / "config.json"
    record["config_sha256"] = hashlib.sha256(config.read_bytes()).hexdigest() if config.is_file() else None
    record.update(weights_fingerprint(spec.name_or_path, getattr(spec, "revision", None)))
    return record


# ------------------------------------------------------------------------------------------------ writing
@dataclass
class StoreKey:
    """What a store was computed from; written to the manifest and checked by ``TopKStore``."""

    teacher: dict[str, Any]
    tokenizer: dict[str, Any]
    template: dict[str, Any]
    k: int
    temperature: float
    logprob_dtype: str = "float16"


class ShardWriter:
    """Appends examples of one split and writes a shard every ``shard_tokens`` completion tokens."""

    def __init__(self, out: Path, split: str, key: StoreKey, shard_tokens: int = 1 << 20) -> None:
        if key.logprob_dtype not in LOGPROB_DTYPES:
            raise ValueError(f"logprob_dtype must be one of {sorted(LOGPROB_DTYPES)}, got {key.logprob_dtype!r}")
        self.out, self.split, self.key, self.shard_tokens = Path(out), split, key, shard_tokens
        self.shards: list[dict[str, Any]] = []
        self.seen: set[str] = set()
        self._reset()

    def _reset(self) -> None:
        self.parts: dict[str, list[Tensor]] = {"ids": [], "logprobs": [], "tail_log": [], "targets": []}
        self.example_ids: list[str] = []
        self.lengths: list[int] = []

    def add(self, example_id: str, targets: Tensor, ids: Tensor, logprobs: Tensor, tail_log: Tensor) -> None:
        """One example's completion rows: ``targets [n]``, ``ids [n, k]``, ``logprobs [n, k]``, ``tail_log [n]``."""
        example_id = str(example_id)
        if example_id in self.seen:
            raise ValueError(f"data split {self.split!r}: example id {example_id!r} occurs twice; the store matches "
                             "rows to batches by id, so ids must be unique (set the data source's id_field)")
        n, k = ids.shape
        if k != self.key.k or logprobs.shape != ids.shape or targets.shape != (n,) or tail_log.shape != (n,):
            raise ValueError(f"example {example_id!r}: expected [n, {self.key.k}] ids/logprobs and [n] "
                             "targets/tail_log, "
                             f"got {tuple(ids.shape)}, {tuple(logprobs.shape)}, {tuple(targets.shape)}, "
                             f"{tuple(tail_log.shape)}")
        self.seen.add(example_id)
        self.example_ids.append(example_id)
        self.lengths.append(n)
        self.parts["ids"].append(ids.to("cpu", torch.int32))
        self.parts["logprobs"].append(logprobs.to("cpu", LOGPROB_DTYPES[self.key.logprob_dtype]))
        self.parts["tail_log"].append(tail_log.to("cpu", torch.float32))
        self.parts["targets"].append(targets.to("cpu", torch.int32))
        if sum(self.lengths) >= self.shard_tokens:
            self.flush()

    def flush(self) -> None:
        from safetensors.torch import save_file

        if not self.example_ids:
            return
        name = f"{self.split}-{len(self.shards):05d}.safetensors"
        tensors = {k: torch.cat(v).contiguous() for k, v in self.parts.items()}
        tensors["offsets"] = torch.tensor([0, *self.lengths], dtype=torch.int64).cumsum(0)
        self.out.mkdir(parents=True, exist_ok=True)
        save_file(tensors, str(self.out / name), metadata={"example_ids": json.dumps(self.example_ids)})
        self.shards.append({"file": name, "n_examples": len(self.example_ids), "n_tokens": sum(self.lengths)})
        self._reset()

    def close(self, data: dict[str, Any]) -> dict[str, Any]:
        """Write the last shard; the split's manifest entry (``data``: its source, sha256 and row count)."""
        self.flush()
        return {"data": data, "shards": self.shards, "n_examples": sum(s["n_examples"] for s in self.shards),
                "n_tokens": sum(s["n_tokens"] for s in self.shards)}


def write_manifest(out: Path, key: StoreKey, splits: dict[str, dict[str, Any]]) -> Path:
    """The manifest: format, version, key (and its sha256) and the splits' entries from ``ShardWriter.close``."""
    key_dict = asdict(key)
    manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, "key": key_dict, "key_sha256": _sha(key_dict),
                "splits": splits}
    path = Path(out) / MANIFEST
    path.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    return path


# ------------------------------------------------------------------------------------------------ reading
@dataclass(frozen=True)
class _Where:
    shard: int
    start: int
    end: int


class TopKStore:
    """A store opened for reading: its manifest, and the teacher rows of any example of its splits.

    ``where`` names the setting that points at the store in error messages (``model.init_args.teacher_logits``).
    """

    def __init__(self, path: str | Path, where: str = "teacher_logits") -> None:
        self.path, self.where = Path(path), where
        manifest = self.path / MANIFEST
        if not manifest.is_file():
            raise FileNotFoundError(f"{where}: {self.path} holds no {MANIFEST}; build the store with "
                                    "`python tools/make_teacher_logits.py --config <your config>`")
        self.manifest = json.loads(manifest.read_text())
        fmt, version = self.manifest.get("format"), self.manifest.get("format_version")
        if fmt != FORMAT or version != FORMAT_VERSION:
            raise StoreMismatchError(f"{where}: {manifest} is format {fmt!r} version {version!r}; this srlm_pl "
                                     f"reads {FORMAT!r} version {FORMAT_VERSION} (version 2 stores the tail's "
                                     "log-mass and the teacher's weights fingerprint): remove the folder and rebuild "
                                     "it with `python tools/make_teacher_logits.py --config <your config> -k "
                                     f"{(self.manifest.get('key') or {}).get('k', 64)}`")
        self.key = StoreKey(**self.manifest["key"])
        self._handles: dict[tuple[str, int], Any] = {}
        self._index: dict[str, dict[str, _Where]] = {}

    @property
    def vocab_size(self) -> int:
        return int(self.key.tokenizer["vocab_size"])

    @property
    def splits(self) -> list[str]:
        return list(self.manifest["splits"])

    def n_tokens(self, split: str) -> int:
        return int(self.manifest["splits"][split]["n_tokens"])

    def size_bytes(self) -> int:
        """Bytes on disk of every shard and the manifest."""
        return sum(p.stat().st_size for p in self.path.iterdir() if p.is_file())

    # -- validation -------------------------------------------------------------------------------
    def check_tokenizer(self, tokenizer: Any) -> None:
        """Refuse a store written with another tokenizer (vocabulary, special ids or size differ)."""
        mine, theirs = self.key.tokenizer, tokenizer_fingerprint(tokenizer)
        if mine["sha256"] != theirs["sha256"]:
            raise StoreMismatchError(
                f"{self.where}: the store {self.path} was written with tokenizer {mine['name']!r} "
                f"({mine['vocab_size']} tokens, vocabulary sha256 {mine['sha256'][:12]}) but this run's tokenizer "
                f"is {theirs['name']!r} ({theirs['vocab_size']} tokens, sha256 {theirs['sha256'][:12]}); "
                "its token ids mean other tokens. "
                "Rebuild the store with this run's tokenizer (tools/make_teacher_logits.py).")

    def check_teacher(self, record: dict[str, Any], key: str) -> None:
        """Refuse a store written by another teacher: ``record`` (``teacher_record`` of the configured teacher, set
        at ``key``) must equal the stored record in every field; the error names each differing field."""
        stored = self.key.teacher
        diff = [f"{f}: store {stored.get(f)!r}, {key} {record.get(f)!r}" for f in sorted(set(stored) | set(record))
                if stored.get(f) != record.get(f)]
        if diff:
            raise StoreMismatchError(
                f"{key} is not the teacher the store {self.path} ({self.where}) was built from; "
                f"{'; '.join(diff)}. Set the teacher the store was built from, set {key} to null, or rebuild the "
                "store (tools/make_teacher_logits.py).")

    def check_data(self, split: str, data: dict[str, Any], template: dict[str, Any], data_key: str) -> None:
        """Refuse a store whose rows or template differ from this run's split (``data``: source, sha256, rows)."""
        entry = self.manifest["splits"].get(split)
        if entry is None:
            raise StoreMismatchError(f"{self.where}: the store {self.path} has no {split!r} split (it has "
                                     f"{', '.join(self.splits)}) but {data_key} is set; rebuild it with that split "
                                     f"(tools/make_teacher_logits.py --splits ...) or unset {data_key}")
        stored = entry["data"]
        if stored["sha256"] != data["sha256"]:
            raise StoreMismatchError(
                f"{self.where}: the store's {split!r} split was written from {stored['source']} ({stored['n_rows']} "
                f"rows, sha256 {stored['sha256'][:12]}) but {data_key} is {data['source']} ({data['n_rows']} rows "
                f"after the length policy, sha256 {data['sha256'][:12]}). Rebuild the store from this data.")
        if self.key.template["sha256"] != template["sha256"]:
            raise StoreMismatchError(
                f"{self.where}: the store was written with the prompt template {self.key.template['config']} (sha256 "
                f"{self.key.template['sha256'][:12]}) but data.init_args.template is {template['config']} (sha256 "
                f"{template['sha256'][:12]}, chat template included). Rebuild the store with this template.")
        if "tokens_sha256" in data and stored.get("tokens_sha256") != data["tokens_sha256"]:
            raise StoreMismatchError(
                f"{self.where}: the store's {split!r} split was tokenized to other input_ids (sha256 "
                f"{str(stored.get('tokens_sha256'))[:12]}) than {data_key} in this run (sha256 "
                f"{data['tokens_sha256'][:12]}) from the same rows, vocabulary and template: another tokenizer "
                "setting (merges, normalisation, special-token handling). Rebuild the store with this run's tokenizer.")

    # -- rows -------------------------------------------------------------------------------------
    def _handle(self, split: str, shard: int) -> Any:
        from safetensors import safe_open

        key = (split, shard)
        if key not in self._handles:
            name = self.manifest["splits"][split]["shards"][shard]["file"]
            self._handles[key] = safe_open(str(self.path / name), framework="pt")
        return self._handles[key]

    def index(self, split: str) -> dict[str, _Where]:
        """Example id -> (shard, first row, end row) for one split (read once from the shards' headers)."""
        if split not in self._index:
            if split not in self.manifest["splits"]:
                raise StoreMismatchError(f"{self.where}: the store {self.path} has no {split!r} split")
            index: dict[str, _Where] = {}
            for s in range(len(self.manifest["splits"][split]["shards"])):
                handle = self._handle(split, s)
                offsets = handle.get_tensor("offsets").tolist()
                for i, ex in enumerate(json.loads(handle.metadata()["example_ids"])):
                    index[ex] = _Where(s, offsets[i], offsets[i + 1])
            self._index[split] = index
        return self._index[split]

    def rows(self, split: str, example_ids: Sequence[Any], targets: Sequence[Tensor]
             ) -> tuple[Tensor, Tensor, Tensor]:
        """The teacher rows ``(ids [N, k] int64, logprobs [N, k] float32, tail_log [N])`` of a batch's examples, in
        order, after checking that each example's stored completion tokens equal ``targets[i]``."""
        index = self.index(split)
        out: dict[str, list[Tensor]] = {"ids": [], "logprobs": [], "tail_log": []}
        for ex, tgt in zip(example_ids, targets, strict=True):
            where = index.get(str(ex))
            if where is None:
                raise StoreMismatchError(f"{self.where}: example {ex!r} of the {split!r} batch is not in the store "
                                         f"{self.path}; was it built from this data?")
            handle = self._handle(split, where.shard)
            stored = handle.get_slice("targets")[where.start : where.end]
            tgt = tgt.detach().to("cpu", torch.int32)
            if stored.shape != tgt.shape or not torch.equal(stored, tgt):
                raise StoreMismatchError(
                    f"{self.where}: example {ex!r} ({split}) has {tgt.numel()} completion tokens in this batch but "
                    f"{stored.numel()} stored, or other token ids (first stored {stored[:5].tolist()}, batch "
                    f"{tgt[:5].tolist()}): the store was built with another max_length/length_policy or tokenization")
            for name, dtype in (("ids", torch.int64), ("logprobs", torch.float32), ("tail_log", torch.float32)):
                # up-cast per piece: torch.cat of float16 pieces fails under CPU bf16 autocast
                out[name].append(handle.get_slice(name)[where.start : where.end].to(dtype))
        return torch.cat(out["ids"]), torch.cat(out["logprobs"]), torch.cat(out["tail_log"])
