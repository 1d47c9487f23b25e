"""User LoRAs: found on the volume as ComfyUI finds them, or downloaded once by URL; checked before
the GPU is touched.

A name is looked up in the `loras` folders of extra_model_paths.yaml (models.model_dirs), first match
wins, as ComfyUI's folder_paths does. A URL is downloaded once into LORA_CACHE_DIR, a folder inside
ComfyUI's `loras` search path (by default `<first existing loras folder>/wan-worker-cache`), under
the URL's hash, so every worker on the volume reuses it and ComfyUI lists it. Downloads go to a
temporary name and are renamed only once complete and checked, so two jobs (or two workers) that
fetch the same URL can never leave a half-written file under the final name; a lock file makes the
second one wait and reuse the first one's file instead of downloading it again.

ComfyUI silently skips LoRA keys that match no layer of the model (it only logs "lora key not
loaded"), so a LoRA made for another model would run as if absent. The header's tensor names are
read here and a file without Wan-style keys is refused (see WAN_KEY).
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import logging
import os
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence
from urllib.parse import urlsplit

from .errors import (LORA_DOWNLOAD_FAILED, LORA_INCOMPATIBLE, MODEL_DAMAGED, MODELS_MISSING,
                     STARTUP_FAILED, WorkerError)
from .images import FetchPolicy, fetch
from .models import inspect_safetensors, model_dirs
from .request import LoraEntry
from .settings import Settings
from .workflow import LoraNode

log = logging.getLogger(__name__)

CACHE_FOLDER = "wan-worker-cache"
MB = 1_000_000
LOCK_POLL_S = 0.2
# The key forms ComfyUI 0.3.64 maps onto a Wan model (comfy/lora.py model_lora_keys_unet: the generic
# `diffusion_model.<module>` form and kohya's `lora_unet_<module with _>`; convert_lora turns Wan Fun's
# `lora_unet__` into the latter), restricted to the transformer blocks every Wan LoRA trains.
WAN_KEY = re.compile(r"^(?:diffusion_model\.blocks\.\d+\.|lora_unet__?blocks_\d+_)")
# What an adapter stores per layer (LoRA up/down or A/B, LoHa, LoKr, full diffs, alphas).
ADAPTER_PART = re.compile(r"(?:lora_(?:up|down|A|B|mid)\b|lora\.(?:up|down)|\.alpha$|\.diff(?:_b)?$|hada_|lokr_)")

Progress = Callable[[int, int | None], None]  # (bytes so far, total if known)

_CHECKED: dict[tuple[str, int, int], str | None] = {}  # (path, size, mtime_ns) -> problem or None


@dataclass(frozen=True)
class LoraChoice:
    """One LoRA for one expert, as the job asked for it."""

    expert: str  # "high" | "low"
    source: str  # the name or URL the job sent
    strength: float
    field: str  # e.g. loras[1].high, for messages

    @property
    def is_url(self) -> bool:
        return "://" in self.source


@dataclass(frozen=True)
class ResolvedLora:
    """Where a LoRA is, in the name ComfyUI lists it under."""

    choice: LoraChoice
    name: str  # lora_name for ComfyUI (relative to a loras folder)
    path: str | None  # None: a URL not downloaded yet, or a problem (dry run)
    state: str  # "ok" | "cached" | "downloaded" | "to_download"; a dry run also: "missing" | "damaged" | "incompatible"
    problem: str = ""  # a dry run's report of what a real job would refuse

    def node(self) -> LoraNode:
        return LoraNode(self.choice.expert, self.name, self.choice.strength)

    def to_dict(self) -> dict[str, Any]:
        """What results and dry runs show: never a URL's query string (it may hold a token)."""
        shown = {"expert": self.choice.expert, "source": redact(self.choice.source), "name": self.name,
                 "strength": self.choice.strength, "state": self.state}
        return {**shown, "problem": self.problem} if self.problem else shown


def choices(entries: Sequence[LoraEntry]) -> list[LoraChoice]:
    return [LoraChoice(expert, ref, strength, f"loras[{n}].{key}")
            for n, entry in enumerate(entries) for expert, ref, strength, key in entry.per_expert()]


def redact(source: str) -> str:
    """A URL without its query and fragment (tokens often ride there); names unchanged."""
    if "://" not in source:
        return source
    parts = urlsplit(source)
    hidden = "?…" if parts.query else ""
    return f"{parts.scheme}://{parts.hostname or ''}{parts.path}{hidden}"


def resolve(loras: Sequence[LoraChoice], settings: Settings, download: bool,
            progress: Progress | None = None) -> list[ResolvedLora]:
    """Find, download (unless `download` is False: a dry run) and check every LoRA.

    Raises MODELS_MISSING (a name on no loras folder), MODEL_DAMAGED, LORA_INCOMPATIBLE (no Wan
    keys) or LORA_DOWNLOAD_FAILED, naming the field and the file. A dry run (download=False)
    reports the first three in the result instead, as it reports missing models.
    """
    dirs = model_dirs(settings)["loras"]
    resolved: dict[str, ResolvedLora] = {}  # one lookup/download per source, even if used twice
    out = []
    for choice in loras:
        first = resolved.get(choice.source)
        if first is None:
            first = _resolve_one(choice, settings, dirs, download, progress)
            resolved[choice.source] = first
        out.append(ResolvedLora(choice, first.name, first.path, first.state, first.problem))
    return out


_DRY_RUN_STATES = {MODELS_MISSING: "missing", MODEL_DAMAGED: "damaged", LORA_INCOMPATIBLE: "incompatible"}


def _resolve_one(choice: LoraChoice, settings: Settings, dirs: Sequence[Path], download: bool,
                 progress: Progress | None) -> ResolvedLora:
    try:
        return (_from_url(choice, settings, dirs, download, progress) if choice.is_url
                else _from_volume(choice, dirs))
    except WorkerError as err:
        if download or err.code not in _DRY_RUN_STATES:
            raise
        return ResolvedLora(choice, choice.source, None, _DRY_RUN_STATES[err.code], err.message)


# ---------------------------------------------------------------- on the volume


def _from_volume(choice: LoraChoice, dirs: Sequence[Path]) -> ResolvedLora:
    for directory in dirs:
        path = Path(directory) / choice.source
        if path.is_file():
            _check(choice, str(path))
            return ResolvedLora(choice, choice.source, str(path), "ok")
    searched = [str(d) for d in dirs]
    raise WorkerError(
        MODELS_MISSING,
        f"{choice.field}: the LoRA {choice.source!r} is not in any loras folder (searched "
        f"{', '.join(searched) or '(nowhere)'}); copy it there, fix the name, or give an https:// URL.",
        {"field": choice.field, "missing": [{"file": f"loras/{choice.source}", "searched": searched}]},
    )


def _check(choice: LoraChoice, path: str) -> None:
    """MODEL_DAMAGED or LORA_INCOMPATIBLE unless the file is a complete safetensors file with Wan keys."""
    problem = file_problem(path)
    if problem is None:
        return
    name = redact(choice.source)
    if problem.startswith("no Wan"):
        raise WorkerError(
            LORA_INCOMPATIBLE,
            f"{choice.field}: the LoRA {name!r} is not for Wan: {problem}; ComfyUI would silently ignore "
            "it. Use a LoRA trained for Wan2.1/2.2 14B.",
            {"field": choice.field, "file": name, "reason": problem},
        )
    raise WorkerError(
        MODEL_DAMAGED,
        f"{choice.field}: the LoRA {name!r} at {path} is damaged ({problem}); replace the file.",
        {"field": choice.field, "damaged": [{"file": name, "path": path, "reason": problem}]},
    )


def file_problem(path: str) -> str | None:
    """Why the file is not a usable Wan LoRA, or None; remembered by (path, size, mtime)."""
    st = os.stat(path)
    key = (path, st.st_size, st.st_mtime_ns)
    if key not in _CHECKED:
        problem, names = inspect_safetensors(path, st.st_size)
        _CHECKED[key] = problem if problem is not None else wan_key_problem(names)
    return _CHECKED[key]


def wan_key_problem(names: Sequence[str]) -> str | None:
    """None when some tensor is a Wan-style adapter key ComfyUI maps onto the Wan model."""
    if any(WAN_KEY.match(n) and ADAPTER_PART.search(n) for n in names):
        return None
    sample = ", ".join(sorted(names)[:3]) or "(no tensors)"
    return (f"no Wan-style keys (diffusion_model.blocks.N.… or lora_unet_blocks_N_…) among its "
            f"{len(names)} tensors, e.g. {sample}")


# ---------------------------------------------------------------- by URL


def cache_dir(settings: Settings, dirs: Sequence[Path]) -> tuple[Path, str]:
    """(the download folder, its path relative to the loras folder ComfyUI finds it in)."""
    if settings.lora_cache_dir:
        cache = Path(os.path.realpath(settings.lora_cache_dir))
        for directory in dirs:
            base = Path(os.path.realpath(directory))
            if cache == base or cache.is_relative_to(base):
                rel = cache.relative_to(base).as_posix()
                return cache, "" if rel == "." else rel
        raise WorkerError(
            STARTUP_FAILED,
            f"LORA_CACHE_DIR={settings.lora_cache_dir} is not inside a folder ComfyUI searches for LoRAs "
            f"({', '.join(str(d) for d in dirs)}); ComfyUI could not load what is downloaded there. Put it "
            "under one of them, or add it to extra_model_paths.yaml.",
            {"setting": "LORA_CACHE_DIR"},
        )
    # model_dirs always lists at least ComfyUI's own models/loras; prefer a folder that exists (the volume)
    base = next((Path(d) for d in dirs if Path(d).is_dir()), Path(dirs[0]))
    return base / CACHE_FOLDER, CACHE_FOLDER


def cache_name(url: str) -> str:
    """The cached file's name: the URL's hash, so the same URL always lands on the same file."""
    return hashlib.sha256(url.encode()).hexdigest()[:32] + ".safetensors"


def _from_url(choice: LoraChoice, settings: Settings, dirs: Sequence[Path], download: bool,
              progress: Progress | None) -> ResolvedLora:
    folder, rel = cache_dir(settings, dirs)
    filename = cache_name(choice.source)
    name = f"{rel}/{filename}" if rel else filename
    dest = folder / filename
    if _usable(choice, dest):
        return ResolvedLora(choice, name, str(dest), "cached")
    if not download:
        return ResolvedLora(choice, name, None, "to_download")
    state = _download_once(choice, dest, settings, progress)
    return ResolvedLora(choice, name, str(dest), state)


def _usable(choice: LoraChoice, dest: Path) -> bool:
    """A cached file is reused when it checks out; a bad one (damaged volume) is fetched again."""
    if not dest.is_file():
        return False
    try:
        _check(choice, str(dest))
    except WorkerError as err:
        if err.code == LORA_INCOMPATIBLE:
            raise
        log.warning("%s: cached LoRA %s is damaged; downloading it again", choice.field, dest.name)
        return False
    return True


def _download_once(choice: LoraChoice, dest: Path, settings: Settings, progress: Progress | None) -> str:
    """Download under a lock; whoever gets it second finds the file and reuses it."""
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        lock = open(dest.parent / f".{dest.name}.lock", "a+b")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise _failed(choice, f"the cache folder {dest.parent} is not writable ({exc.strerror})",
                      "cache_not_writable") from None
    with lock:
        _lock(lock, choice, settings)
        try:
            if _usable(choice, dest):
                log.info("%s: another job downloaded %s meanwhile; reusing it", choice.field, dest.name)
                return "cached"
            _download(choice, dest, settings, progress)
            return "downloaded"
        finally:
            with contextlib.suppress(OSError):  # a filesystem without locks: nothing to release
                fcntl.flock(lock, fcntl.LOCK_UN)


def _lock(lock: Any, choice: LoraChoice, settings: Settings) -> None:
    """Wait (bounded) for a download of the same file by another job or worker to finish."""
    deadline = time.monotonic() + settings.lora_fetch_timeout_s
    while True:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                return  # a filesystem without locks: the atomic rename still keeps files whole
        if time.monotonic() > deadline:
            raise _failed(choice, "another download of the same file did not finish in time", "lock_timeout")
        time.sleep(LOCK_POLL_S)


def _download(choice: LoraChoice, dest: Path, settings: Settings, progress: Progress | None) -> None:
    policy = _policy(choice, settings)
    part = dest.parent / f".{dest.name}.{os.getpid()}.{secrets.token_hex(4)}.part"
    started = time.monotonic()
    try:
        with open(part, "wb") as fh:
            written = [0]

            def sink(chunk: bytes) -> None:
                fh.write(chunk)
                written[0] += len(chunk)
                if progress:
                    progress(written[0], None)

            fetch(choice.source, settings, policy, sink)
            fh.flush()
            os.fsync(fh.fileno())
        problem, names = inspect_safetensors(str(part), part.stat().st_size)
        if problem is not None:
            raise _failed(choice, f"the downloaded file is not a complete safetensors file ({problem})",
                          "not_safetensors")
        key_problem = wan_key_problem(names)
        if key_problem is not None:
            raise WorkerError(
                LORA_INCOMPATIBLE,
                f"{choice.field}: the LoRA at {redact(choice.source)} is not for Wan: {key_problem}; ComfyUI "
                "would silently ignore it. Use a LoRA trained for Wan2.1/2.2 14B.",
                {"field": choice.field, "file": redact(choice.source), "reason": key_problem},
            )
        os.replace(part, dest)
    except OSError as exc:
        raise _failed(choice, f"writing to {dest.parent} failed ({exc.strerror or exc})", "write_failed") from None
    finally:
        part.unlink(missing_ok=True)
    log.info("%s: LoRA from %s saved as %s (%d bytes in %.1f s)", choice.field, urlsplit(choice.source).hostname,
             dest.name, dest.stat().st_size, time.monotonic() - started)


def _policy(choice: LoraChoice, settings: Settings) -> FetchPolicy:
    return FetchPolicy(choice.field, int(settings.max_lora_mb * MB), "MAX_LORA_MB", settings.lora_fetch_timeout_s,
                       "LORA_FETCH_TIMEOUT_S", failure_code=LORA_DOWNLOAD_FAILED,
                       too_large_code=LORA_DOWNLOAD_FAILED, what="LoRA",
                       headers_for=lambda host: auth_headers(host, settings))


def _on(host: str, domain: str) -> bool:
    host = host.lower().rstrip(".")
    return host == domain or host.endswith("." + domain)


def auth_headers(host: str, settings: Settings) -> dict[str, str]:
    """HF_TOKEN only for huggingface.co, CIVITAI_TOKEN only for civitai.com (and their subdomains);
    never for the CDNs they redirect to."""
    if settings.hf_token and _on(host, "huggingface.co"):
        return {"Authorization": f"Bearer {settings.hf_token}"}
    if settings.civitai_token and _on(host, "civitai.com"):
        return {"Authorization": f"Bearer {settings.civitai_token}"}
    return {}


def _failed(choice: LoraChoice, why: str, reason: str) -> WorkerError:
    return WorkerError(
        LORA_DOWNLOAD_FAILED,
        f"{choice.field}: the LoRA at {redact(choice.source)} could not be downloaded: {why}; check the URL "
        "(and HF_TOKEN / CIVITAI_TOKEN for gated files) and send the job again.",
        {"field": choice.field, "url": redact(choice.source), "reason": reason},
    )
