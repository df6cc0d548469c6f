"""A downloadable weights file pinned by URL, sha256 and size: the record every family's registry is made of. No I/O.

The families' registries (SAM in :mod:`geoseg.models.checkpoints`, :mod:`geoseg.models.ftw.variants`,
:mod:`geoseg.models.delineate_anything.variants`) list these; :mod:`geoseg.models.checkpoints` downloads, verifies and
caches them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_HEX = re.compile(r"[0-9a-f]{8,64}")


@dataclass(frozen=True)
class Checkpoint:
    """A downloadable checkpoint, pinned by URL, sha256 and (where published) size."""

    name: str
    """Name used on the command line (``geoseg models download <name>``)."""
    variant: str
    """The architecture the weights fit (a SAM variant, an FTW or Delineate Anything variant)."""
    url: str
    sha256: str
    """Lower-case hex digest of the whole file, or its leading hex digits where the publisher pins only those
    (torchvision's convention, used by TorchGeo: the 8 digits after the last ``-`` of the file name, which
    ``torch.hub`` checks with ``check_hash=True``). At least 8 digits."""
    size: int | None
    """Size in bytes; None where the publisher does not state it (then the digest alone decides)."""
    license: str = ""
    """The weights' license as the publisher states it."""
    family: str = "sam"
    """Model type whose spec loads it: ``sam``, ``ftw`` or ``delineate_anything``."""

    def __post_init__(self) -> None:
        if not _HEX.fullmatch(self.sha256):
            raise ValueError(f"checkpoint {self.name}: sha256 must be 8 to 64 lower-case hex digits")

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]

    def matches(self, digest: str) -> bool:
        """Whether a file's full sha256 is the pinned one (or starts with the pinned prefix)."""
        return digest.startswith(self.sha256)
