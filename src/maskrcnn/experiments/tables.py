"""The paper's Table 2 (Mask R-CNN ablations on COCO minival), as rows of config overrides.

Each table compares designs on one trunk; `maskrcnn ablate TABLE` trains every row on the
built-in shapes dataset with the same seeds and budget and sets our AP beside the paper's.
The trunks are shapes.yaml's scaled alike: its R50 stands for ResNet-50 ([1, 1, 1, 1] blocks
per stage, 16 channels per group); R101 has 4 res4 blocks (ResNet-101's res4 has 23 blocks
to ResNet-50's 6: about 4x); X101 is R101 with 8 groups of 8 channels (ResNeXt-101 32x8d's
res2 bottleneck is 4x ResNet's width: 8 x 8 = 64 = 4 x 16). C4 heads pool 14 x 14 and res5
halves that (the paper's C4 design); C5 pools 7 x 7 from the stride-32 res5 (Table 2d).

Free of torch: the command line checks every row's overrides before any work.
"""

from dataclasses import dataclass

from maskrcnn.errors import OptionError, shown


@dataclass(frozen=True)
class PaperFigures:
    """The paper's figures for a row, in percent (None where the paper gives none)."""

    mask_ap: float
    mask_ap50: float | None = None
    mask_ap75: float | None = None
    box_ap: float | None = None


@dataclass(frozen=True)
class Row:
    """One design: its name in the paper's table and the config overrides that make it."""

    name: str
    overrides: tuple[str, ...]
    paper: PaperFigures | None


@dataclass(frozen=True)
class Table:
    key: str  # "2a" ...
    title: str  # what the table compares, e.g. "mask branch, R50-FPN"
    baseline: str  # the row the others are compared with
    rows: tuple[Row, ...]

    def row(self, name: str) -> Row:
        return next(row for row in self.rows if row.name == name)


R50 = ("model.backbone.stage_blocks=[1,1,1,1]",)
R101 = ("model.backbone.stage_blocks=[1,1,4,1]",)
X101 = (*R101, "model.backbone.groups=8", "model.backbone.width_per_group=8")
# shapes.yaml's FPN-only settings back to their defaults: a C4 or C5 model does not read them
# (at their defaults they say nothing; `config.validate.WITHOUT_EFFECT`)
NOT_FPN = ("model.backbone.fpn_channels=256", "model.roi_heads.fc_dim=1024")
C4 = (
    "model.backbone.kind=c4",
    "model.roi_heads.box_resolution=14",
    "model.roi_heads.mask_resolution=14",
    *NOT_FPN,
)
C5 = (
    "model.backbone.kind=c5",
    "model.roi_heads.box_resolution=7",
    "model.roi_heads.mask_resolution=7",
    *NOT_FPN,
)
FPN = ("model.backbone.kind=fpn",)
# The paper's MLP mask head is as wide as its box head (fc 1024), shapes.yaml's box head 512
# (the FCN row leaves it out: the FCN head does not read it), and its convolutions' width, which
# it does not read, back to the default.
MLP = (
    "model.roi_heads.mask_head=mlp",
    "model.roi_heads.mask_fc_dim=512",
    "model.roi_heads.mask_conv_dim=256",
)


def _rows(*rows: tuple[str, tuple[str, ...], PaperFigures | None]) -> tuple[Row, ...]:
    return tuple(Row(name, tuple(overrides), paper) for name, overrides, paper in rows)


TABLES = {
    "2a": Table(
        "2a",
        "backbone architecture",
        "R50-C4",
        _rows(
            ("R50-C4", (*R50, *C4), PaperFigures(30.3)),
            ("R101-C4", (*R101, *C4), PaperFigures(32.7)),
            ("R50-FPN", (*R50, *FPN), PaperFigures(33.6)),
            ("R101-FPN", (*R101, *FPN), PaperFigures(35.4)),
            ("X101-FPN", (*X101, *FPN), PaperFigures(36.7)),
        ),
    ),
    "2b": Table(
        "2b",
        "multinomial vs independent masks, R50-C4",
        "sigmoid",
        _rows(
            ("softmax", (*R50, *C4, "model.roi_heads.mask_loss=softmax"), PaperFigures(24.8)),
            ("sigmoid", (*R50, *C4, "model.roi_heads.mask_loss=sigmoid"), PaperFigures(30.3)),
            ("agnostic", (*R50, *C4, "model.roi_heads.mask_loss=agnostic"), PaperFigures(29.7)),
        ),
    ),
    "2c": Table(
        "2c",
        "RoIAlign vs RoIWarp and RoIPool, R50-C4",
        "align",
        _rows(
            ("pool", (*R50, *C4, "model.roi_heads.pooler=pool"), PaperFigures(26.9)),
            ("warp_max", (*R50, *C4, "model.roi_heads.pooler=warp_max"), PaperFigures(27.2)),
            ("warp", (*R50, *C4, "model.roi_heads.pooler=warp"), PaperFigures(27.1)),
            ("align_max", (*R50, *C4, "model.roi_heads.pooler=align_max"), PaperFigures(30.2)),
            ("align", (*R50, *C4, "model.roi_heads.pooler=align"), PaperFigures(30.3)),
        ),
    ),
    "2d": Table(
        "2d",
        "RoIAlign vs RoIPool on stride-32 features, R50-C5",
        "align",
        _rows(
            ("pool", (*R50, *C5, "model.roi_heads.pooler=pool"), PaperFigures(23.6, 46.5, 21.6, 28.2)),
            ("align", (*R50, *C5, "model.roi_heads.pooler=align"), PaperFigures(30.9, 51.8, 32.1, 34.0)),
        ),
    ),
    "2e": Table(
        "2e",
        "mask branch, R50-FPN",
        "fcn",
        _rows(
            ("mlp", (*R50, *FPN, *MLP), PaperFigures(31.5)),
            ("fcn", (*R50, *FPN, "model.roi_heads.mask_head=fcn"), PaperFigures(33.6)),
        ),
    ),
}


def table_names() -> str:
    """The tables as a list for a message: "2a (backbone architecture), 2b (...), ..."."""
    return ", ".join(f"{key} ({table.title})" for key, table in TABLES.items())


def get_table(key: str, option: str = "TABLE") -> Table:
    """The table `key` ("2a" ... "2e"; "2C" and "table2c" are read alike); OptionError listing
    the tables otherwise."""
    normal = key.strip().lower().removeprefix("table").strip()
    if normal in TABLES:
        return TABLES[normal]
    raise OptionError(f"{shown(option, key)}: no such table; expected one of {table_names()}")


def select_rows(table: Table, names: list[str] | None, option: str = "--rows") -> tuple[Row, ...]:
    """The rows named (all when `names` is None), in the table's order; OptionError naming
    the unknown ones and the table's rows."""
    if names is None:
        return table.rows
    known = [row.name for row in table.rows]
    unknown = [name for name in names if name not in known]
    if unknown or not names:
        given = ",".join(names)
        problem = f"no row {', '.join(unknown)} in table {table.key}" if unknown else "no rows named"
        raise OptionError(f"{shown(option, given)}: {problem}; its rows are {', '.join(known)}")
    return tuple(row for row in table.rows if row.name in names)


def row_overrides(row: Row, base: list[str] = ()) -> list[str]:
    """The overrides one row trains with: `base` (the command's, for every row) then the
    row's own, which win over `base` for the keys they set."""
    return [*base, *row.overrides]
