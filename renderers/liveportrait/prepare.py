"""The liveportrait avatar package: like meshwarp's, one portrait picked from the training
video (its sharpest frontal frame), since LivePortrait animates a single source image."""

from __future__ import annotations

from ..meshwarp.prepare import write_portrait_package
from ..preparation import PackageWriter, PreparationSource, ProgressCallback


def write_package(
    package: PackageWriter, source: PreparationSource, progress: ProgressCallback
) -> int:
    return write_portrait_package(package, source, progress, model="liveportrait")
