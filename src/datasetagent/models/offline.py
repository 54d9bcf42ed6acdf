"""The labelers that need no weights and make no model call: ``folder-name`` and ``seed``.

They are registered in ``BACKENDS`` like every other backend; a run that names no labeler
uses them (``default_labelers``), each where it applies.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from datasetagent.models import BACKENDS, Backend, BackendConfig, ImageEmbedder, Usage

if TYPE_CHECKING:
    from datasetagent.spec import DatasetSpec


class FolderNameLabeler:
    """Stands for the class folders of the sources. It plays no model role: the Data Label
    agent gives a collected image the class of its folder (labeler ``folder-name``) and has
    every classifier check it."""

    def __init__(self) -> None:
        self.name = "folder-name"  # ``agents.labeling.FOLDER_LABELER``
        self.usage = Usage()


class _Offline:
    offline = True
    takes_model = False
    default_model = "-"


class FolderNameFactory(_Offline):
    """classification: the class folder an image came from"""

    def applies(self, spec: DatasetSpec) -> bool:
        return True

    def __call__(self, config: BackendConfig) -> Backend:
        return FolderNameLabeler()


class SeedFactory(_Offline):
    """classification: learned from --existing examples"""

    #: It learns on an embedder's image vectors when one of the run's labelers is one.
    uses_peers = True

    def applies(self, spec: DatasetSpec) -> bool:
        return spec.task == "classification" and bool(spec.existing)

    def __call__(self, config: BackendConfig) -> Backend:
        from datasetagent.models.seed import SeedClassifier

        embedder = next((b for b in config.peers if isinstance(b, ImageEmbedder)), None)
        return SeedClassifier(random_state=config.seed, embedder=embedder)


BACKENDS.add("folder-name", FolderNameFactory())
BACKENDS.add("seed", SeedFactory())
