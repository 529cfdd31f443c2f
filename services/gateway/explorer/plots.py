"""The explorer's plots as SVG text, drawn in Python from the result's own numbers: the same file
opens on its own (no script, no style sheet: colours are presentation attributes, which the
gateway's Content-Security-Policy allows where it refuses style attributes), prints, and is
inserted into the page by app.js. Every mark carries its numbers as `data-*` attributes and a
`<title>`, so a reader (and a test) can check a plotted value against hierarchy.json.

Colours: text at >= 4.5:1 and marks at >= 3:1 on white (WCAG AA, 1.4.3 and 1.4.11); series
differ by shape and dash as well as colour."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any
from xml.sax.saxutils import escape

INK, MUTED, PAPER = "#1b1f24", "#4a5561", "#ffffff"
GRID, BAND = "#e3e8ee", "#dfe4ea"
SIGNIFICANCE, RANDOM, LEAST_ACTIVE = "#0a4f9e", "#4a5561", "#9a3412"
SELECTIVE, NOT_SELECTIVE = "#1f6f3f", "#6b7785"
BUDGET, TOO_FEW = "#b45309", "#7f8995"
TEXT_COLOURS = (INK, MUTED)
MARK_COLOURS = (SIGNIFICANCE, RANDOM, LEAST_ACTIVE, SELECTIVE, NOT_SELECTIVE, BUDGET, TOO_FEW)
FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif"
WIDTH = 720


def _n(x: float) -> str:
    """A coordinate or value as short text."""
    return f"{x:.2f}".rstrip("0").rstrip(".") if math.isfinite(x) else "0"


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{x:.0%}"


def _attributes(attrs: dict[str, Any]) -> str:
    """name="value" pairs, escaped; `data_x` and `font_size` become data-x and font-size."""
    return " ".join(
        f'{k.rstrip("_").replace("_", "-")}="{escape(str(v), {chr(34): "&quot;"})}"'
        for k, v in attrs.items()
        if v is not None
    )


@dataclass
class Svg:
    """An SVG document built from escaped parts; `name` becomes its data-plot attribute."""

    name: str
    width: float
    height: float
    title: str
    desc: str
    parts: list[str] = field(default_factory=list)

    def el(self, tag: str, text: str | None = None, tip: str | None = None, **attrs: Any) -> None:
        """One element; `tip` becomes its <title> (a tooltip, read by screen readers)."""
        inner = (f"<title>{escape(tip)}</title>" if tip else "") + (escape(text) if text else "")
        names = _attributes(attrs)
        self.parts.append(f"<{tag} {names}>{inner}</{tag}>" if inner else f"<{tag} {names}/>")

    def open(self, tag: str, **attrs: Any) -> None:
        self.parts.append(f"<{tag} {_attributes(attrs)}>")

    def close(self, tag: str) -> None:
        self.parts.append(f"</{tag}>")

    def text(self, x: float, y: float, text: str, size: float = 12, colour: str = INK, **attrs: Any) -> None:
        self.el("text", text, x=_n(x), y=_n(y), font_size=_n(size), fill=colour, **attrs)

    def render(self) -> str:
        head = (
            f'<svg xmlns="http://www.w3.org/2000/svg" class="plot" data-plot="{escape(self.name)}" '
            f'viewBox="0 0 {_n(self.width)} {_n(self.height)}" width="{_n(self.width)}" '
            f'height="{_n(self.height)}" role="img" aria-labelledby="{self.name}-t {self.name}-d" '
            f'font-family="{FONT}">'
            f'<title id="{self.name}-t">{escape(self.title)}</title>'
            f'<desc id="{self.name}-d">{escape(self.desc)}</desc>'
            f'<rect width="100%" height="100%" fill="{PAPER}"/>'
        )
        return head + "".join(self.parts) + "</svg>"


@dataclass(frozen=True)
class Axis:
    """A linear map from values to pixels."""

    lo: float
    hi: float
    start: float
    end: float

    def __call__(self, value: float) -> float:
        span = self.hi - self.lo or 1.0
        return self.start + (min(max(value, self.lo), self.hi) - self.lo) / span * (self.end - self.start)


def share_range(values: Iterable[float]) -> tuple[float, float, list[float]]:
    """An axis over shares (0 to 1) that holds `values`, zoomed to the tightest of 1, 2, 5, 10
    or 25 percentage-point steps that spans them in at most 5 steps (a curve whose points all
    prune 97 to 99.5% would otherwise be one blot at the edge), and its ticks."""
    found = [v for v in values if v is not None and math.isfinite(v)]
    if not found:
        return 0.0, 1.0, [0, 0.25, 0.5, 0.75, 1]
    for step in (0.01, 0.02, 0.05, 0.1, 0.25):
        first = math.floor(round(min(found) / step, 9))
        last = math.ceil(round(max(found) / step, 9))
        if last - first <= 5:
            break
    if last - first < 2:  # at least two steps, inside 0 to 1
        last = min(last + 1, round(1 / step))
        first = max(0, last - 2)
        last = max(last, first + 2)
    ticks = [round(i * step, 6) for i in range(first, last + 1)]
    return ticks[0], ticks[-1], ticks


def _tick(t: float) -> str:
    return f"{t:.0%}" if abs(t * 100 - round(t * 100)) < 1e-9 else f"{t:.1%}"


def _frame(
    svg: Svg, x: Axis, y: Axis, x_ticks: Sequence[float], y_ticks: Sequence[float], size: float = 10
) -> None:
    """Grid lines at the ticks (shares), their labels and a box."""
    for t in y_ticks:
        svg.el("line", x1=_n(x.start), x2=_n(x.end), y1=_n(y(t)), y2=_n(y(t)), stroke=GRID)
        svg.text(x.start - 4, y(t) + 4, _tick(t), size, MUTED, text_anchor="end")
    for t in x_ticks:
        svg.el("line", x1=_n(x(t)), x2=_n(x(t)), y1=_n(y.start), y2=_n(y.end), stroke=GRID)
        svg.text(x(t), y.start + size + 4, _tick(t), size, MUTED, text_anchor="middle")
    svg.el(
        "rect",
        x=_n(x.start),
        y=_n(y.end),
        width=_n(x.end - x.start),
        height=_n(y.start - y.end),
        fill="none",
        stroke=MUTED,
    )


def _axis_titles(svg: Svg, x: Axis, y: Axis, x_label: str, y_label: str) -> None:
    svg.text((x.start + x.end) / 2, y.start + 28, x_label, 11, INK, text_anchor="middle")
    middle = (y.start + y.end) / 2
    svg.text(
        x.start - 40,
        middle,
        y_label,
        11,
        INK,
        text_anchor="middle",
        transform=f"rotate(-90 {_n(x.start - 40)} {_n(middle)})",
    )


def _marker(svg: Svg, shape: str, cx: float, cy: float, colour: str, tip: str, **data: Any) -> None:
    """circle (filled), square (hollow) or diamond (filled): the pruning curve's three series."""
    if shape == "circle":
        svg.el("circle", tip=tip, cx=_n(cx), cy=_n(cy), r=4.5, fill=colour, stroke=PAPER, **data)
    elif shape == "square":
        svg.el(
            "rect",
            tip=tip,
            x=_n(cx - 4),
            y=_n(cy - 4),
            width=8,
            height=8,
            fill=PAPER,
            stroke=colour,
            stroke_width=2,
            **data,
        )
    else:
        points = (
            f"{_n(cx)},{_n(cy - 5.5)} {_n(cx + 5.5)},{_n(cy)} {_n(cx)},{_n(cy + 5.5)} {_n(cx - 5.5)},{_n(cy)}"
        )
        svg.el("polygon", tip=tip, points=points, fill=colour, stroke=PAPER, **data)


def _polyline(svg: Svg, points: Iterable[tuple[float, float]], colour: str, dash: str | None) -> None:
    text = " ".join(f"{_n(px)},{_n(py)}" for px, py in points)
    if text.count(",") > 1:
        svg.el("polyline", points=text, fill="none", stroke=colour, stroke_width=1.6, stroke_dasharray=dash)


# --- the pruning curve -------------------------------------------------------------------------

MEASURES = {"top1_accuracy": "top-1 accuracy", "top1_agreement": "top-1 agreement with the unpruned model"}


def _pruning_panel(
    svg: Svg, points: list[dict[str, Any]], measure: str, x: Axis, y: Axis, where: str
) -> None:
    """One panel: significance, random (mean and 95% interval) and least-active prunings at each
    point, x the share pruned, y `measure`."""
    points = sorted((p for p in points if p.get("significance")), key=lambda p: p["share_pruned"])
    randoms = [p for p in points if p.get("random")]
    if randoms:  # where 95% of random prunings fall, as a band
        upper = [(x(p["share_pruned"]), y(p["random"]["upper"][measure] or 0)) for p in randoms]
        lower = [(x(p["share_pruned"]), y(p["random"]["lower"][measure] or 0)) for p in randoms[::-1]]
        svg.el(
            "polygon",
            points=" ".join(f"{_n(a)},{_n(b)}" for a, b in upper + lower),
            fill=BAND,
            data_series="random-interval",
        )
    _polyline(
        svg, [(x(p["share_pruned"]), y(p["random"]["mean"][measure] or 0)) for p in randoms], RANDOM, "4 3"
    )
    least = [p for p in points if p.get("least_active")]
    _polyline(
        svg,
        [(x(p["share_pruned"]), y(p["least_active"][measure] or 0)) for p in least],
        LEAST_ACTIVE,
        "1.5 3",
    )
    _polyline(
        svg, [(x(p["share_pruned"]), y(p["significance"][measure] or 0)) for p in points], SIGNIFICANCE, None
    )
    for p in points:
        share, q = p["share_pruned"], p.get("q_threshold")
        at = f"{where}, q ≤ {q:g}: {share:.1%} pruned" if q is not None else f"{where}: {share:.1%} pruned"
        common = {"data_share": _n(share), "data_q": None if q is None else f"{q:g}"}
        if p.get("random"):
            r = p["random"]
            lo, hi, mean = (r[k][measure] or 0 for k in ("lower", "upper", "mean"))
            svg.el(
                "line",
                x1=_n(x(share)),
                x2=_n(x(share)),
                y1=_n(y(lo)),
                y2=_n(y(hi)),
                stroke=RANDOM,
                stroke_width=1.2,
                data_series="random-range",
                data_lower=_n(lo),
                data_upper=_n(hi),
                **common,
            )
            _marker(
                svg,
                "square",
                x(share),
                y(mean),
                RANDOM,
                f"{at}; random prunings {mean:.3f} (95% of them {lo:.3f} to {hi:.3f})",
                data_series="random",
                data_value=f"{mean:.6g}",
                **common,
            )
        if p.get("least_active"):
            value = p["least_active"][measure] or 0
            _marker(
                svg,
                "diamond",
                x(share),
                y(value),
                LEAST_ACTIVE,
                f"{at}; least active pruned: {value:.3f}",
                data_series="least-active",
                data_value=f"{value:.6g}",
                **common,
            )
        value = p["significance"][measure] or 0
        _marker(
            svg,
            "circle",
            x(share),
            y(value),
            SIGNIFICANCE,
            f"{at}; pruned by significance: {value:.3f}",
            data_series="significance",
            data_value=f"{value:.6g}",
            **common,
        )


LEGEND = (
    ("circle", SIGNIFICANCE, "by significance (in no selective membership)"),
    ("square", RANDOM, "uniform random (mean)"),
    ("band", RANDOM, "95% of random prunings"),
    ("diamond", LEAST_ACTIVE, "least active"),
)


def pruning_svg(pruning: dict[str, Any], alpha: float) -> str:
    """The pruning curve on the held-out images: all layers at once, then each layer alone."""
    measure = pruning["verdict"]["measure"]
    curve = list(pruning["curve"])
    if not any(abs(p["q_threshold"] - pruning["at_alpha"]["q_threshold"]) < 1e-12 for p in curve):
        curve.append(pruning["at_alpha"])
    layers: dict[str, list[dict[str, Any]]] = {}
    for point in curve:
        for layer in point["layers"]:
            layers.setdefault(layer["layer"], []).append({**layer, "q_threshold": point["q_threshold"]})
    per_row, small_w, small_h, pitch = 4, 130, 110, 176
    rows = -(-len(layers) // per_row)
    what = MEASURES[measure]
    short = what.split(" with")[0]
    svg = Svg(
        "pruning",
        WIDTH,
        330 + rows * (small_h + 76),
        f"Pruning curve: {what} against the share of neurons pruned",
        f"On {pruning['heldout_images']} held-out images: the neurons in no selective membership "
        f"pruned (by significance) next to {pruning['random_sets']} uniform random prunings (mean "
        f"and 95% interval) and the least-active neurons, the same count per layer. "
        + pruning["verdict"]["sentence"],
    )
    svg.text(
        0, 16, f"All layers at once ({pruning['heldout_images']} held-out images)", 13, INK, font_weight="600"
    )
    lo, hi, x_ticks = share_range(p["share_pruned"] for p in curve)
    x, y = Axis(lo, hi, 80, 420), Axis(0, 1, 250, 36)
    _frame(svg, x, y, x_ticks, (0, 0.25, 0.5, 0.75, 1))
    _axis_titles(svg, x, y, "share of neurons pruned" + (" (axis zoomed)" if hi - lo < 1 else ""), short)
    if measure == "top1_accuracy" and pruning.get("unpruned_top1_accuracy") is not None:
        base = pruning["unpruned_top1_accuracy"]
        svg.el(
            "line",
            x1=_n(x.start),
            x2=_n(x.end),
            y1=_n(y(base)),
            y2=_n(y(base)),
            stroke=INK,
            stroke_dasharray="6 2 1 2",
            tip=f"unpruned model: {base:.3f}",
            data_series="unpruned",
        )
    _pruning_panel(svg, curve, measure, x, y, "all layers")
    for i, (shape, colour, text) in enumerate(LEGEND):
        if shape == "band":
            svg.el("rect", x=440, y=_n(45 + 22 * i), width=10, height=10, fill=BAND, stroke=RANDOM)
        else:
            _marker(svg, shape, 445, 50 + 22 * i, colour, text)
        svg.text(457, 54 + 22 * i, text, 11, INK)
    svg.text(440, 54 + 22 * 4 + 4, f"random: {pruning['random_sets']} prunings per point", 11, MUTED)
    svg.text(
        440, 54 + 22 * 5, f"at q ≤ {alpha:g}: {pruning['at_alpha']['share_pruned']:.1%} pruned", 11, MUTED
    )
    svg.text(440, 54 + 22 * 6 - 4, f"y: {what}", 11, MUTED)
    top = 310
    svg.text(
        0,
        top,
        "Each layer pruned alone (the others intact); x: share of that layer",
        13,
        INK,
        font_weight="600",
    )
    for i, (name, points) in enumerate(layers.items()):
        col, row = i % per_row, i // per_row
        left, upper = 45 + col * pitch, top + 34 + row * (small_h + 76)
        lo, hi, x_ticks = share_range(p["share_pruned"] for p in points)
        lx, ly = Axis(lo, hi, left, left + small_w), Axis(0, 1, upper + small_h, upper)
        svg.open("g", data_layer=name)
        _frame(svg, lx, ly, x_ticks[:: max(1, len(x_ticks) // 3)], (0, 0.5, 1), 9)
        channels = points[0].get("channels")
        svg.text(lx.start, ly.end - 6, name + (f" ({channels} channels)" if channels else ""), 11, INK)
        _pruning_panel(svg, points, measure, lx, ly, name)
        svg.close("g")
    return svg.render()


# --- the job's summary -------------------------------------------------------------------------

TEST_NAMES = {
    "specificity": "specificity (held-out images)",
    "keep_only": "keep only the group",
    "difference": "difference neurons",
    "importance": "importance vs random neurons",
}
PLAN_STEPS = {
    "specificity": "specificity tests",
    "keep_only": "specificity tests",
    "importance": "importance tests",
    "difference": "difference tests",
}


Part = tuple[str, float, str, str, bool]  # key, value, colour, words, hollow (not tested)
ROW = 44  # a bar and the line of words under it


def _stacked(svg: Svg, y: float, label: str, parts: Sequence[Part], scale: Axis, name: str) -> None:
    """A labelled bar of segments, filled or hollow (a share not tested), and under it the
    segments' values in words."""
    svg.text(scale.start - 8, y + 13, label, 12, INK, text_anchor="end")
    left = scale.start
    for key, value, colour, words, hollow in parts:
        if value <= 0:
            continue
        width = scale(value) - scale.start
        svg.el(
            "rect",
            tip=words,
            x=_n(left + (1 if hollow else 0)),
            y=_n(y + (1 if hollow else 0)),
            width=_n(max(width - (3 if hollow else 1), 0.5)),
            height=16 if hollow else 18,
            fill=PAPER if hollow else colour,
            stroke=colour if hollow else None,
            stroke_width=2 if hollow else None,
            stroke_dasharray="4 2" if hollow else None,
            data_bar=name,
            data_part=key,
            data_value=f"{value:.6g}",
        )
        left += width
    svg.text(scale.start, y + 32, "; ".join(p[3] for p in parts if p[1] > 0) or "none", 11, MUTED)


def summary_svg(hierarchy: dict[str, Any]) -> str:
    """Concepts per level, the memberships' evidence, and which tests ran and decided what."""
    levels = hierarchy.get("levels") or []
    job = hierarchy.get("uncertainty") or {}
    summary = job.get("summary")
    steps = {s["name"]: s for s in (job.get("plan") or {}).get("steps", [])}
    svg = Svg(
        "summary",
        WIDTH,
        0,
        "The result at a glance",
        f"{len(hierarchy['clusters'])} concepts on {len(levels)} levels"
        + (
            f"; {summary['memberships']} memberships, {_pct(summary.get('selective_share'))} selective; "
            f"{summary['frequent_neurons']} frequent neurons."
            if summary
            else "; no uncertainty statistics."
        ),
    )
    left = 230
    y = 8.0
    svg.text(0, y + 12, "Concepts per level", 13, INK, font_weight="600")
    y += 22
    most = max((lv["clusters"] for lv in levels), default=1)
    scale = Axis(0, most, left, left + 380)
    for lv in levels:
        svg.text(left - 8, y + 13, f"level {lv['level']}", 12, INK, text_anchor="end")
        svg.el(
            "rect",
            tip=f"level {lv['level']}: {lv['clusters']} concepts",
            x=left,
            y=_n(y),
            width=_n(max(scale(lv["clusters"]) - left, 1)),
            height=18,
            fill=SIGNIFICANCE,
            data_bar="level",
            data_level=lv["level"],
            data_value=lv["clusters"],
        )
        svg.text(scale(lv["clusters"]) + 6, y + 13, f"{lv['clusters']:,}", 11, MUTED)
        y += 24
    if not summary:
        svg.height = y + 8
        return svg.render()
    y += 12
    n = summary["memberships"]
    svg.text(0, y + 12, f"Memberships ({n:,} neuron-in-concept pairs)", 13, INK, font_weight="600")
    y += 24
    share = Axis(0, 1, left, left + 440)
    selective = summary.get("selective_share")
    if selective is not None:
        parts: list[Part] = [
            ("selective", selective, SELECTIVE, f"{selective:.0%} selective", False),
            (
                "generic",
                1 - selective,
                NOT_SELECTIVE,
                f"{1 - selective:.0%} not selective here (generic)",
                False,
            ),
        ]
        _stacked(svg, y, "selective here", parts, share, "selectivity")
        y += ROW
    reliable, too_few = summary.get("reliable_share"), summary.get("too_few_images_share")
    if reliable is not None:
        rest = max(0.0, 1 - reliable - (too_few or 0))
        parts = [
            ("reliable", reliable, SELECTIVE, f"{reliable:.0%} reliable", False),
            ("unreliable", rest, BUDGET, f"{rest:.0%} not reliable", False),
            ("too_few_images", too_few or 0, TOO_FEW, f"{too_few or 0:.0%} too few images to tell", True),
        ]
        _stacked(svg, y, "reliable (interval ≥ min_support)", parts, share, "reliability")
        y += ROW
    svg.text(
        left,
        y + 8,
        f"{summary['frequent_neurons']:,} frequent neurons (active in at least min_support of all images)",
        11,
        INK,
        data_frequent=summary["frequent_neurons"],
    )
    svg.text(left, y + 24, f"{summary['generic_memberships']:,} generic memberships (not selective)", 11, INK)
    y += 44
    svg.text(0, y + 12, "Tests: decided, and not run", 13, INK, font_weight="600")
    y += 24
    keys = ("tested", "not_tested_budget", "not_tested_too_few_images")
    totals = [sum(summary[t][k] for k in keys) for t in TEST_NAMES if t in summary]
    counts = Axis(0, max([*totals, 1]), left, left + 440)
    for test, words in TEST_NAMES.items():
        c = summary.get(test)
        if c is None:
            continue
        if not sum(c[k] for k in keys):
            note = steps.get(PLAN_STEPS[test], {}).get("note") or "not run"
            svg.text(left - 8, y + 13, words, 12, INK, text_anchor="end")
            svg.text(
                left,
                y + 13,
                note if note.startswith("not") else f"not run: {note}",
                11,
                MUTED,
                data_bar=test,
                data_part="not_run",
            )
        else:
            not_significant = c["tested"] - c["significant"]
            parts = [
                ("significant", c["significant"], SELECTIVE, f"{c['significant']} significant", False),
                (
                    "not_significant",
                    not_significant,
                    NOT_SELECTIVE,
                    f"{not_significant} not significant",
                    False,
                ),
                (
                    "not_tested_budget",
                    c["not_tested_budget"],
                    BUDGET,
                    f"{c['not_tested_budget']} not tested: budget",
                    True,
                ),
                (
                    "not_tested_too_few_images",
                    c["not_tested_too_few_images"],
                    TOO_FEW,
                    f"{c['not_tested_too_few_images']} not tested: too few images",
                    True,
                ),
            ]
            _stacked(svg, y, words, parts, counts, test)
        y += ROW
    svg.height = y
    return svg.render()


# --- a concept's group -------------------------------------------------------------------------


def support_svg(layers: Sequence[dict[str, Any]], min_support: float, title: str) -> str:
    """Each group neuron's support (dot) with its interval (line), per layer, against min_support;
    filled: selective here, hollow: not selective here. `layers`: the concept page's strips."""
    count = sum(len(layer["neurons"]) for layer in layers)
    step = min(14.0, max(3.0, 640 / max(count, 1)))
    gap = 14.0
    width = max(WIDTH, 60 + count * step + gap * len(layers) + 10)
    svg = Svg(
        "support",
        width,
        210,
        f"Support of each neuron of {title}'s group, with its interval",
        f"{count} neurons in {len(layers)} layers. Dots: support (share of the concept's images in "
        f"which the neuron is active); lines: its interval; dashed line: min_support "
        f"{min_support:g}; filled dots: selective here, hollow: not selective here.",
    )
    x0 = 52.0
    y = Axis(0, 1, 160, 14)
    for t in (0, 0.25, 0.5, 0.75, 1):
        svg.el("line", x1=_n(x0 - 4), x2=_n(width - 6), y1=_n(y(t)), y2=_n(y(t)), stroke=GRID)
        svg.text(x0 - 8, y(t) + 4, f"{t:.0%}", 10, MUTED, text_anchor="end")
    svg.text(
        12,
        (y.start + y.end) / 2,
        "support",
        11,
        INK,
        text_anchor="middle",
        transform=f"rotate(-90 12 {_n((y.start + y.end) / 2)})",
    )
    x = x0 + gap / 2
    for layer in layers:
        start = x
        for n in layer["neurons"]:
            cx = x + step / 2
            iv = n.get("interval")
            if iv:
                svg.el(
                    "line",
                    x1=_n(cx),
                    x2=_n(cx),
                    y1=_n(y(iv[0])),
                    y2=_n(y(iv[1])),
                    stroke=INK if n.get("selective") else NOT_SELECTIVE,
                    stroke_width=max(1, min(2, step / 4)),
                )
            selective = n.get("selective")
            words = (
                f"{layer['layer']} channel {n['channel']}: support {n['support']:.3f}"
                + (f", interval {iv[0]:.3f} to {iv[1]:.3f}" if iv else "")
                + (", selective here" if selective else ", not selective here" if selective is False else "")
            )
            svg.el(
                "circle",
                tip=words,
                cx=_n(cx),
                cy=_n(y(n["support"])),
                r=_n(max(1.6, min(4, step / 2.6))),
                fill=SELECTIVE if selective else PAPER,
                stroke=SELECTIVE if selective else NOT_SELECTIVE,
                stroke_width=1.4,
                data_layer=layer["layer"],
                data_channel=n["channel"],
                data_value=f"{n['support']:.6g}",
                data_lower=None if not iv else f"{iv[0]:.6g}",
                data_upper=None if not iv else f"{iv[1]:.6g}",
            )
            x += step
        svg.text((start + x) / 2, y.start + 16, layer["layer"], 11, INK, text_anchor="middle")
        svg.text((start + x) / 2, y.start + 30, f"{len(layer['neurons'])}", 10, MUTED, text_anchor="middle")
        x += gap
    svg.el(
        "line",
        x1=_n(x0 - 4),
        x2=_n(width - 6),
        y1=_n(y(min_support)),
        y2=_n(y(min_support)),
        stroke=LEAST_ACTIVE,
        stroke_dasharray="5 3",
        tip=f"min_support {min_support:g}",
    )
    return svg.render()


def concept_support_svg(rows: Sequence[dict[str, Any]], min_support: float, title: str, shown: int) -> str:
    """A neuron's support in each concept that holds it (one row per concept, highest level
    first), with its interval; filled: selective there."""
    rows = list(rows)[:shown]
    height = 40 + 18 * len(rows)
    label_w = 300
    svg = Svg(
        "neuron-support",
        WIDTH,
        height,
        f"Support of {title} in each concept that holds it",
        f"{len(rows)} concepts. Dots: support (share of the concept's images in which it is active); "
        f"lines: its interval; dashed line: min_support {min_support:g}; filled: selective there.",
    )
    x = Axis(0, 1, label_w, WIDTH - 20)
    for t in (0, 0.25, 0.5, 0.75, 1):
        svg.el("line", x1=_n(x(t)), x2=_n(x(t)), y1=16, y2=_n(height - 22), stroke=GRID)
        svg.text(x(t), height - 8, f"{t:.0%}", 10, MUTED, text_anchor="middle")
    svg.el(
        "line",
        x1=_n(x(min_support)),
        x2=_n(x(min_support)),
        y1=16,
        y2=_n(height - 22),
        stroke=LEAST_ACTIVE,
        stroke_dasharray="5 3",
        tip=f"min_support {min_support:g}",
    )
    for i, row in enumerate(rows):
        cy = 26 + 18 * i
        label = row["label"] if len(row["label"]) <= 44 else row["label"][:43] + "…"
        svg.text(label_w - 8, cy + 4, f"{label} (L{row['level']})", 11, INK, text_anchor="end")
        iv = row.get("interval")
        selective = row.get("selective")
        if iv:
            svg.el(
                "line",
                x1=_n(x(iv[0])),
                x2=_n(x(iv[1])),
                y1=_n(cy),
                y2=_n(cy),
                stroke=INK if selective else NOT_SELECTIVE,
                stroke_width=1.6,
            )
        svg.el(
            "circle",
            tip=f"{row['label']}: support {row['support']:.3f}"
            + (f", interval {iv[0]:.3f} to {iv[1]:.3f}" if iv else "")
            + (", selective there" if selective else ", not selective there" if selective is False else ""),
            cx=_n(x(row["support"])),
            cy=_n(cy),
            r=4,
            fill=SELECTIVE if selective else PAPER,
            stroke=SELECTIVE if selective else NOT_SELECTIVE,
            stroke_width=1.4,
            data_concept=row["id"],
            data_value=f"{row['support']:.6g}",
        )
    return svg.render()


# --- model uncertainty -------------------------------------------------------------------------


def model_uncertainty_svg(
    mu: dict[str, Any], interpretation: str, max_entropy: float | None, job_mean: dict[str, float] | None
) -> str:
    """The concept's mean predictive entropy split into expected entropy and mutual information
    (the latter read as `interpretation` says), and the job's mean over its sampled images."""
    epistemic = interpretation == "epistemic"
    mi_words = "mutual information: " + (
        "epistemic (the model's uncertainty)" if epistemic else "sensitivity to feature dropout"
    )
    ee_words = "expected entropy" + (": aleatoric (in the images)" if epistemic else "")
    top = max_entropy or max(mu["total"], (job_mean or {}).get("total", 0)) * 1.1 or 1.0
    mi_top = max(mu["mutual_information"], (job_mean or {}).get("mutual_information", 0)) * 1.25 or 1.0
    svg = Svg(
        "model-uncertainty",
        WIDTH,
        150,
        "Model uncertainty split (predictive entropy, nats)",
        f"Mean over the concept's {mu['images']} sampled images: total {mu['total']:.4f} = "
        f"{ee_words} {mu['expected_entropy']:.4f} + {mi_words} {mu['mutual_information']:.4f}.",
    )
    left = 200
    total = Axis(0, top, left, left + 420)
    svg.text(left - 8, 30, "total", 12, INK, text_anchor="end")
    ee_w = total(mu["expected_entropy"]) - left
    svg.el(
        "rect",
        tip=f"{ee_words}: {mu['expected_entropy']:.4f}",
        x=left,
        y=17,
        width=_n(max(ee_w, 0.5)),
        height=18,
        fill=NOT_SELECTIVE,
        data_part="expected_entropy",
        data_value=f"{mu['expected_entropy']:.6g}",
    )
    svg.el(
        "rect",
        tip=f"{mi_words}: {mu['mutual_information']:.4f}",
        x=_n(left + ee_w),
        y=17,
        width=_n(max(total(mu["total"]) - left - ee_w, 0.5)),
        height=18,
        fill=SIGNIFICANCE,
        data_part="mutual_information",
        data_value=f"{mu['mutual_information']:.6g}",
    )
    svg.text(
        left,
        52,
        f"0 to {top:.2f} nats" + (" (ln of the classes: the most possible)" if max_entropy else ""),
        10,
        MUTED,
    )
    svg.text(left + 430, 30, f"{mu['total']:.3f}", 11, INK)
    svg.text(left - 8, 92, "mutual information", 12, INK, text_anchor="end")
    mi = Axis(0, mi_top, left, left + 420)
    svg.el(
        "rect",
        tip=f"{mi_words}: {mu['mutual_information']:.4f}",
        x=left,
        y=79,
        width=_n(max(mi(mu["mutual_information"]) - left, 0.5)),
        height=18,
        fill=SIGNIFICANCE,
        data_part="mutual_information_zoom",
        data_value=f"{mu['mutual_information']:.6g}",
    )
    svg.text(mi(mu["mutual_information"]) + 6, 92, f"{mu['mutual_information']:.4f}", 11, INK)
    if job_mean:
        for scale, key, y in ((total, "total", 13), (mi, "mutual_information", 75)):
            px = scale(job_mean[key])
            svg.el(
                "line",
                x1=_n(px),
                x2=_n(px),
                y1=y,
                y2=y + 26,
                stroke=INK,
                stroke_width=2,
                stroke_dasharray="3 2",
                tip=f"job mean {key.replace('_', ' ')}: {job_mean[key]:.4f}",
                data_job_mean=f"{job_mean[key]:.6g}",
            )
    svg.text(left, 118, f"{ee_words} (grey) + {mi_words} (blue)", 11, MUTED)
    svg.text(
        left,
        134,
        f"{mu['images']} of the concept's images were sampled"
        + ("; dashed: the job's mean" if job_mean else ""),
        11,
        MUTED,
    )
    return svg.render()
