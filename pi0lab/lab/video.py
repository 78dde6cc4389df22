"""Inline rollout videos in a notebook."""

from pathlib import Path

from IPython.display import Video


def show_video(data: bytes | str | Path, width: int = 512) -> Video:
    """An embedded mp4 (bytes, or the path of an .mp4 file) for display in a notebook cell."""
    if not isinstance(data, bytes):
        path = Path(data)
        if not path.is_file():
            raise FileNotFoundError(f"no video at {path}")
        data = path.read_bytes()
    return Video(data, embed=True, mimetype="video/mp4", width=width)
