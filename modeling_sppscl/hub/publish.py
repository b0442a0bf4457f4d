"""Publishing from `run_sppscl.py`: check the Hub repositories before any work is done."""

from huggingface_hub import HfApi


class HubAccessError(SystemExit):
    """The Hub cannot be used as asked: exits with one line that says why and what to check (no traceback)."""


def _one_line(error: Exception) -> str:
    first = next((line.strip() for line in str(error).splitlines() if line.strip()), "")
    return f"{type(error).__name__}: {first}" if first else type(error).__name__


def check_hub_repo(repo_id: str, option: str, token: str | None = None, private: bool | None = None, repo_type: str = "model") -> str:
    """Check the token and create (or reuse) `repo_id`; return its full id (`user/name` for a bare name).

    Called before any data loading, extraction or training, so that an offline machine, a missing or read-only
    token, or a namespace one may not write to stops the run at once, in one line naming `option`.
    """
    api = HfApi(token=token)
    try:
        user = api.whoami()["name"]
        full_id = repo_id if "/" in repo_id else f"{user}/{repo_id}"
        extra = {"space_sdk": "gradio"} if repo_type == "space" else {}
        return api.create_repo(full_id, repo_type=repo_type, private=private, exist_ok=True, **extra).repo_id
    # Whatever the cause (no network, offline mode, no token, no write access, a proxy), the answer is the same:
    # stop now, before hours of work, with the reason.
    except Exception as error:
        raise HubAccessError(
            f"{option} {repo_id}: the Hub cannot be used ({_one_line(error)}). Check the network, the token "
            "(`hf auth login` or --hub_token) and your write access to that namespace; or run without it."
        ) from None

