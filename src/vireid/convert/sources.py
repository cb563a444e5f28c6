"""The official code bases whose checkpoints `vireid convert` imports, and the test-time settings of each.

Pure data (no torch): the command line builds its help from it. Every value is the official test script's
(docs/official-weights.md cites the file of each); `OfficialSource.overrides(dataset)` writes them as config
overrides so a converted run evaluates as the authors did without flags.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: The datasets a converted run can be set up for (`--dataset`), i.e. the shipped configs/<dataset>/ presets.
DATASETS: tuple[str, ...] = ("sysu", "regdb", "llcm")


@dataclass(frozen=True)
class EvalSettings:
    """How the official test script embeds and ranks images."""

    height: int
    width: int
    features: tuple[str, ...]  # vireid feature kinds; the first one is the reported (official) feature
    flip: bool  # CAJ flip fusion: normalise((f(x) + f(flip x)) / 2)
    distance: str = "cosine"  # every official script ranks L2-normalised features by inner product (or the
    # squared Euclidean distance of normalised features, which ranks the same)
    method: dict = field(default_factory=dict)  # method options that choose the test-time feature


@dataclass(frozen=True)
class OfficialSource:
    """One official code base: the vireid method its weights load into and how its authors test them."""

    name: str  # the `--from` value
    title: str
    repo: str  # where the code is (GitHub owner/name[/folder])
    method: str  # the vireid method
    preset: str  # configs/<dataset>/<preset>.yaml the converted config starts from
    preset_sysu: str  # the SYSU preset when it differs (AGW has configs/sysu/agw.yaml)
    test_time: dict[str, EvalSettings]  # per dataset
    container: str  # what one saved file holds, in words (for errors and docs)

    def config_name(self, dataset: str) -> str:
        """The shipped config of `dataset` the converted run starts from: configs/<dataset>/<preset>.yaml."""
        return f"configs/{dataset}/{self.preset_sysu if dataset == 'sysu' else self.preset}.yaml"

    def overrides(self, dataset: str) -> list[str]:
        """The official test-time settings of `dataset` as dotted config overrides."""
        t = self.test_time[dataset]
        out = [f"data.height={t.height}", f"data.width={t.width}", f"eval.features=[{', '.join(t.features)}]",
               f"eval.flip={'true' if t.flip else 'false'}", f"eval.distance={t.distance}"]
        out += [f"method.{k}={v}" for k, v in t.method.items()]
        return out


def _same(t: EvalSettings) -> dict[str, EvalSettings]:
    return {d: t for d in DATASETS}


# The two-stream AGW network (model.py of mangye16/Cross-Modal-Re-ID-baseline): test.py embeds at 288x144 (TestData
# resizes with PIL ANTIALIAS = LANCZOS), prints the "FC" (post-BN) and "POOL" (pre-BN) features, ranks by the inner
# product of L2-normalised features; train.py keeps the best "FC" rank-1, so FC (vireid "bn") is reported first.
_AGW = EvalSettings(288, 144, ("bn", "pool"), flip=False)
# CAJ's testa.py: the same, with the features of the image and of its mirror averaged and L2-normalised again.
_CAJ = EvalSettings(288, 144, ("bn", "pool"), flip=True)
# LbA's test.py: 288x144 (ANTIALIAS), feature feat4_p_norm = the L2-normalised pre-BN GeM feature, inner product.
_LBA = EvalSettings(288, 144, ("pool", "bn"), flip=False, method={"test_feature": "pool"})
# MPANet (engine/__init__.py, utils/eval_*.py): T.Resize(image_size) (384x128 SYSU, 256x128 RegDB), the BN-neck
# output (7 x 2048 = 14336-d with PAM), L2-normalised (SYSU) and ranked by squared Euclidean distance.
_MPANET = {"sysu": EvalSettings(384, 128, ("bn", "pool"), flip=False),
           "regdb": EvalSettings(256, 128, ("bn", "pool"), flip=False),
           "llcm": EvalSettings(384, 128, ("bn", "pool"), flip=False)}  # no official LLCM code: vireid's preset size
# JSIA-ReID (core/test.py): the encoder's post-BN 2048-d feature of the gray input at 256x128, no flip, cosine.
_JSIA = EvalSettings(256, 128, ("bn", "pool"), flip=False)

SOURCES: dict[str, OfficialSource] = {
    "agw": OfficialSource("agw", "AGW (TPAMI 2021)", "mangye16/Cross-Modal-Re-ID-baseline", "baseline", "baseline",
                          "agw", _same(_AGW), "a dict with 'net' (the state dict), 'cmc', 'mAP', 'mINP', 'epoch'"),
    "caj": OfficialSource("caj", "CAJ (ICCV 2021)", "mangye16/Cross-Modal-Re-ID-baseline/ICCV21_CAJ", "baseline",
                          "baseline", "baseline", _same(_CAJ),
                          "a dict with 'net' (the state dict), 'cmc', 'mAP', 'mINP', 'epoch'"),
    "mpanet": OfficialSource("mpanet", "MPANet (CVPR 2021)", "DoubtedSteam/MPANet", "mpanet", "mpanet", "mpanet",
                             _MPANET, "the bare state dict (ignite's ModelCheckpoint, model_best.pth)"),
    "lba": OfficialSource("lba", "LbA (ICCV 2021)", "cvlab-yonsei/LbA", "lba", "lba", "lba", _same(_LBA),
                          "a dict with 'net' (the state dict), 'cmc', 'mAP', 'mINP', 'epoch'"),
    "jsia": OfficialSource("jsia", "JSIA-ReID (AAAI 2020)", "wangguanan/JSIA-ReID", "jsia", "jsia", "jsia",
                           _same(_JSIA), "four DataParallel state dicts model-0_<epoch>.pkl ... model-3_<epoch>.pkl"),
}
