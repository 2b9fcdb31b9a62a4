"""Where a policy's files come from: a local directory or the Hugging Face Hub, offline-aware.

Owns :func:`resolve_policy_dir` (``--policy-path`` -> a local directory), :func:`ensure_hub_files`
(a Hub repo's snapshot from the cache, else downloaded) and the two errors every VLA entry point
prints without a traceback: :class:`PolicyLoadError` and :class:`PolicyUnavailableOffline`. When
files are missing and the Hub is unreachable (or ``HF_HUB_OFFLINE=1``), the message names every
repo needed, the ``hf download`` commands and the offline smoke test (docs/vla.md#offline-use).

Imports neither torch nor lerobot; ``huggingface_hub`` is imported only when a function runs.
"""

from __future__ import annotations

import os
import re
from pathlib import Path


class PolicyLoadError(RuntimeError):
    """A policy cannot be loaded; the message says why and what to do (printed without traceback)."""


class PolicyUnavailableOffline(PolicyLoadError):
    """Weights are not cached and the Hub cannot be reached."""


#: A Hugging Face Hub repo id (owner/name), as --policy-path accepts besides local folders.
REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def _hub_offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE) or os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")


def _download_hint(model_type: str, repos: list[tuple[str, str, list[str] | None]], tiny_dir: str) -> str:
    lines = [f"  hf download {r}" + "".join(f' --include "{p}"' for p in (pats or [])) for r, _, pats in repos]
    needed = "; ".join(f"{r} ({what})" for r, what, _ in repos)
    main = repos[0][0]
    return (
        f"Needed: {needed}.\n"
        "On a machine with internet access:\n"
        + "\n".join(lines) + "\n"
        "then copy ~/.cache/huggingface/hub to this machine, or download into a folder\n"
        f"  hf download {main} --local-dir {main.split('/')[-1]}\n"
        f"and run with --policy-path /path/to/{main.split('/')[-1]}"
        + (" (put the backbone files in /path/to/" + main.split('/')[-1]
           + ("/vlm/" if model_type == "smolvla" else "/tokenizer/") + " to need no cache at all)"
           if len(repos) > 1 else "")
        + ".\n"
        + (f"Offline smoke test with tiny random weights: python make_tiny_policies.py --out {tiny_dir} && "
           f"python run_mujoco_simulation.py --model-type {model_type} --policy-path {tiny_dir}/{model_type} --headless"
           if model_type in ("smolvla", "pi0") else "")
    )


def ensure_hub_files(repo_id: str, model_type: str, what: str, allow_patterns: list[str] | None,
                     all_repos: list[tuple[str, str, list[str] | None]], required: tuple[str, ...] = ()) -> Path:
    """Local snapshot folder of ``repo_id``: from the Hugging Face cache, else downloaded.

    Args:
        repo_id: the Hub repo (``owner/name``).
        model_type: ``smolvla`` / ``pi0``, for the messages.
        what: what the repo provides, for the messages (e.g. ``"PaliGemma tokenizer"``).
        allow_patterns: the files to download (None = all).
        all_repos: every ``(repo id, what, allow_patterns)`` the policy needs, named together in
            the offline message so one download round suffices.
        required: files a cached snapshot must hold to count as complete.

    Raises:
        PolicyUnavailableOffline: not cached (or ``required`` files missing) and the Hub is
            unreachable / ``HF_HUB_OFFLINE=1``; one message naming every repo in ``all_repos``
            and the ``hf download`` commands.
        PolicyLoadError: the repo does not exist or is gated.
    """
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    def _complete(p: str | Path) -> bool:
        return all((Path(p) / f).exists() for f in required)

    try:
        path = snapshot_download(repo_id, local_files_only=True)
        if _complete(path):
            return Path(path)
    except Exception:  # noqa: BLE001  (not cached: LocalEntryNotFoundError and friends)
        pass
    hint = _download_hint(model_type, all_repos, "../outputs/tiny_policies")
    if _hub_offline():
        raise PolicyUnavailableOffline(
            f"Cannot load the {model_type} policy: {repo_id} ({what}) is not in the local Hugging Face cache "
            f"and the Hub is unreachable (HF_HUB_OFFLINE=1).\n{hint}")
    try:
        path = snapshot_download(repo_id, allow_patterns=allow_patterns)
    except GatedRepoError as e:
        raise PolicyLoadError(
            f"{repo_id} is gated: accept its licence on https://huggingface.co/{repo_id} and log in "
            f"(hf auth login), or pass --policy-path with a local copy. ({e.__class__.__name__})") from e
    except RepositoryNotFoundError as e:
        raise PolicyLoadError(f"No Hugging Face repository {repo_id!r}: check --policy-path.") from e
    except Exception as e:  # noqa: BLE001  (network errors of any kind)
        raise PolicyUnavailableOffline(
            f"Cannot load the {model_type} policy: {repo_id} ({what}) is not in the local Hugging Face cache "
            f"and the Hub cannot be reached ({e.__class__.__name__}).\n{hint}") from e
    if not _complete(path):
        raise PolicyLoadError(f"{repo_id} has no {', '.join(required)}: is it a LeRobot {model_type} policy?")
    return Path(path)


def resolve_policy_dir(path: str, model_type: str, all_repos: list[tuple[str, str, list[str] | None]]) -> Path:
    """``--policy-path`` -> a local directory with ``config.json`` and ``model.safetensors``.

    An existing path is used as is; something shaped like ``owner/name`` is a Hub id
    (:func:`ensure_hub_files`).

    Raises:
        PolicyLoadError: a path that does not exist / lacks the files.
        PolicyUnavailableOffline: see :func:`ensure_hub_files`.
    """
    p = Path(path).expanduser()
    if p.exists():
        missing = [f for f in ("config.json", "model.safetensors") if not (p / f).is_file()]
        if not p.is_dir() or missing:
            raise PolicyLoadError(
                f"--policy-path {path}: expected a LeRobot policy directory (config.json, model.safetensors, "
                f"policy_preprocessor.json, policy_postprocessor.json); missing: {', '.join(missing) or 'not a directory'}.")
        return p
    if not REPO_ID.match(path) or path.startswith((".", "/", "~")):
        raise PolicyLoadError(f"--policy-path {path}: no such directory, and not a Hugging Face repo id (owner/name).")
    return ensure_hub_files(path, model_type, "policy weights, config, processors", None, all_repos,
                            required=("config.json", "model.safetensors"))
