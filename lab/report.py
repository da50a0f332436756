"""The backtest report: ``backtest.json`` (every figure and series, machine-readable) and one
self-contained ``report.html`` beside it (tables, and matplotlib plots inlined as base64 PNG).

matplotlib is the ``report`` extra (``pip install 'limitstream[report]'``; the dev extra has
it): imported only when a report is drawn.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import orjson

from features.windows import DAY_MS
from lab.backtest_metrics import HEADLINE
from lab.truth import NOT_OPEN, STATUSES

COLORS: Final = {"static": "#7f7f7f", "monthly": "#ff7f0e", "rules_only": "#9467bd",
                 "champion": "#1f77b4", "challenger": "#2ca02c"}
STATUS_COLORS: Final = {"ACTIVE": "#4c9a2a", "PROBATION": "#f2c14e", "SUSPENDED": "#d1495b",
                        "FROZEN": "#5b8bd1", "HOLD_FOR_REVIEW": "#9b5de5", "CLOSED": "#444444",
                        NOT_OPEN: "#dddddd"}
#: The challenger is dashed: where it agrees with the champion, both stay visible.
STYLES: Final = {"challenger": "--", "rules_only": ":"}
LABELS: Final = {
    "static": "static limit",
    "monthly": "monthly batch review",
    "rules_only": "rules only (model off, real time)",
    "champion": "champion (real time)",
    "challenger": "challenger (real time)",
}
JSON_NAME: Final = "backtest.json"
HTML_NAME: Final = "report.html"


def write_report(data: Mapping[str, Any], out_dir: Path) -> tuple[Path, Path]:
    """Write ``backtest.json`` and ``report.html`` into ``out_dir``; return their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / JSON_NAME
    json_path.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2))
    html_path = out_dir / HTML_NAME
    html_path.write_text(render_html(data), encoding="utf-8")
    return json_path, html_path


# -- formatting -----------------------------------------------------------------------------


def _get(d: Mapping[str, Any], dotted: str) -> Any:
    cur: Any = d
    for part in dotted.split("."):
        if not isinstance(cur, Mapping) or part not in cur:
            return None
        cur = cur[part]
    return cur


def _fmt(v: Any, unit: str, signed: bool = False) -> str:
    if v is None:
        return "—"
    sign = "+" if signed and v > 0 else ""
    if unit == "money":
        return f"{sign}{v / 100:,.0f}"
    if unit == "share":
        return f"{sign}{100 * v:.1f} %"
    if unit == "days":
        return f"{sign}{v:.1f}"
    return f"{sign}{v:,}" if isinstance(v, int) else f"{sign}{v:,.2f}"


def _date(ts: int) -> str:
    return datetime.fromtimestamp(ts / 1000, UTC).strftime("%Y-%m-%d")


def _e(s: object) -> str:
    return html.escape(str(s), quote=False)


def _png(draw: Callable[[Any], None], size: tuple[float, float], alt: str) -> str:
    """A plot as an inline PNG; ``alt`` says what it shows, for a reader who cannot see it."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, dpi=100, layout="constrained")
    draw(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    b64 = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{b64}">'


# -- plots ----------------------------------------------------------------------------------


def _plot_losses(runs: Mapping[str, Any]) -> str:
    names = list(runs)
    figures = [("defaulters.loss_total", "loss (balance at default)"),
               ("defaulters.ead_limit_total", "limits at default"),
               ("defaulters.balance_at_end_total", "balance at the end")]

    def draw(fig: Any) -> None:
        ax = fig.subplots()
        width = 0.8 / len(names)
        for i, n in enumerate(names):
            vals = [(_get(runs[n]["metrics"], k) or 0) / 100 for k, _ in figures]
            xs = [j + (i - (len(names) - 1) / 2) * width for j in range(len(figures))]
            bars = ax.bar(xs, vals, width, label=LABELS.get(n, n), color=COLORS.get(n))
            ax.bar_label(bars, labels=[f"{v:,.0f}" for v in vals], fontsize=7, rotation=90,
                         padding=2)
        ax.set_xticks(range(len(figures)), [t for _, t in figures])
        ax.set_ylabel("major units")
        ax.set_title("Defaulters: exposure and loss")
        ax.margins(y=0.2)
        ax.legend(fontsize=8)

    return _png(draw, (9, 4), "Bar chart per run: defaulters' loss (balance at default), "
                "their limits at default and their balance at the end, in major units.")


def _plot_good_credit(runs: Mapping[str, Any]) -> str:
    challenger = "challenger" in runs

    def draw(fig: Any) -> None:
        axes = fig.subplots(2 if challenger else 1, 1, sharex=True, squeeze=False)[:, 0]
        ax = axes[0]
        for n, r in runs.items():
            s = r["series"]
            ax.plot(s["days"], [v / 100 for v in s["good_mean_limit"]],
                    label=LABELS.get(n, n), color=COLORS.get(n), ls=STYLES.get(n, "-"))
        ax.set_ylabel("mean drawable limit")
        ax.set_title("Credit extended to good users (revenue proxy)")
        ax.legend(fontsize=8)
        if challenger:
            a, b = runs["challenger"]["series"], runs["champion"]["series"]
            diff = [(x - y) / 100 for x, y in zip(a["good_mean_limit"], b["good_mean_limit"],
                                                  strict=True)]
            axes[1].plot(a["days"], diff, color=COLORS["challenger"])
            axes[1].axhline(0, color="black", lw=0.5)
            axes[1].set_ylabel("challenger - champion")
        axes[-1].set_xlabel("day of the horizon")

    return _png(draw, (9, 5.5 if challenger else 3.5), "Line chart over the days of the "
                "horizon: the mean drawable limit of the good users with an open account, per run.")


def _plot_state_mix(runs: Mapping[str, Any]) -> str:
    names = list(runs)
    challenger = "challenger" in runs
    panels = len(names) + (1 if challenger else 0)
    order = [*STATUSES, NOT_OPEN]

    def draw(fig: Any) -> None:
        axes = fig.subplots(1, panels, sharey=False, squeeze=False)[0]
        for ax, n in zip(axes, names, strict=False):
            s = runs[n]["series"]
            mix = s["state_mix"]
            keys = [k for k in order if any(mix.get(k, []))]
            ax.stackplot(s["days"], [mix[k] for k in keys], labels=keys,
                         colors=[STATUS_COLORS[k] for k in keys])
            ax.set_title(LABELS.get(n, n), fontsize=9)
            ax.set_xlabel("day")
        from matplotlib.patches import Patch

        axes[0].set_ylabel("users")
        handles = [Patch(color=STATUS_COLORS[k], label=k) for k in order]
        fig.legend(handles=handles, loc="outside lower center", ncol=len(order), fontsize=8)
        if challenger:
            ax = axes[-1]
            a, b = runs["challenger"]["series"], runs["champion"]["series"]
            for k in order:
                d = [x - y for x, y in zip(a["state_mix"][k], b["state_mix"][k], strict=True)]
                if any(d):
                    ax.plot(a["days"], d, color=STATUS_COLORS[k], label=k)
            ax.axhline(0, color="black", lw=0.5)
            ax.set_title("challenger - champion", fontsize=9)
            ax.set_xlabel("day")

    return _png(draw, (3.2 * panels + 1, 3.8), "Stacked area charts, one per run: the number "
                "of accounts in each status (ACTIVE, PROBATION, SUSPENDED, HOLD_FOR_REVIEW, "
                "FROZEN, CLOSED, not yet open) over the days of the horizon.")


def _plot_time_to_suspension(runs: Mapping[str, Any]) -> str:
    groups = ("defaulters", "recoverers")

    def draw(fig: Any) -> None:
        axes = fig.subplots(1, len(groups), squeeze=False)[0]
        for ax, g in zip(axes, groups, strict=True):
            for n, r in runs.items():
                xs = r["series"]["time_to_suspension_days"][g]
                total = r["metrics"]["time_to_suspension"][g]["missers"]
                if not total:
                    continue
                steps = [0.0, *xs]
                ys = [i / total for i in range(len(steps))]
                ax.step(steps, ys, where="post", label=LABELS.get(n, n), color=COLORS.get(n),
                        ls=STYLES.get(n, "-"))
            ax.set_title(f"{g}: suspended within N days of the first miss", fontsize=9)
            ax.set_xlabel("days since the first overdue notice")
            ax.set_ylim(0, 1.02)
        axes[0].set_ylabel("share of users who missed")
        if axes[0].get_legend_handles_labels()[0]:
            axes[0].legend(fontsize=8)

    return _png(draw, (10, 3.6), "Distribution per run of the days from a user's first "
                "overdue notice to their suspension, for defaulters and recovering missers.")


def _plot_samples(data: Mapping[str, Any], runs: Mapping[str, Any]) -> str:
    samples: Mapping[str, Sequence[str]] = data["samples"]
    rows = [(p, u) for p, us in samples.items() for u in us]
    if not rows:
        return ""
    cols = 2
    nrows = -(-len(rows) // cols)
    start = data["horizon"]["start_ts"]
    end_day = data["horizon"]["days"]
    truth_marks = data.get("sample_truth", {})

    def day(ts: int) -> float:
        return float(ts - start) / DAY_MS

    def draw(fig: Any) -> None:
        axes = fig.subplots(nrows, cols, squeeze=False)
        for i, (persona, uid) in enumerate(rows):
            ax = axes[i // cols][i % cols]
            for n, r in runs.items():
                pts = r["series"]["samples"].get(uid, {}).get("limit", [])
                if not pts:
                    continue
                xs = [day(p[0]) for p in pts] + [end_day]
                ys = [p[1] / 100 for p in pts] + [pts[-1][1] / 100]
                ax.step(xs, ys, where="post", color=COLORS.get(n), label=LABELS.get(n, n),
                        lw=1.4 if n in ("champion", "challenger") else 1.0,
                        ls=STYLES.get(n, "-"))
            bal = runs["champion"]["series"]["samples"].get(uid, {}).get("balance", [])
            if bal:
                ax.fill_between([day(b[0]) for b in bal] + [end_day],
                                [b[1] / 100 for b in bal] + [bal[-1][1] / 100],
                                step="post", color="#bbbbbb", alpha=0.5, lw=0,
                                label="balance (champion)")
            for label, ts in truth_marks.get(uid, {}).items():
                ax.axvline(day(ts), color="black", ls=":", lw=0.8)
                ax.annotate(label, (day(ts), 1), xycoords=("data", "axes fraction"),
                            fontsize=6, rotation=90, va="top", ha="right")
            ax.set_title(f"{persona} · {uid}", fontsize=8)
            ax.set_xlim(0, end_day)
            ax.tick_params(labelsize=7)
        for j in range(len(rows), nrows * cols):
            axes[j // cols][j % cols].set_visible(False)
        handles, labels = axes[0][0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside lower center", ncol=len(labels), fontsize=8)

    return _png(draw, (11, 2.3 * nrows + 0.6), "Step charts for sample users of each persona: "
                "the drawable limit per run over time, the champion's balance in grey, and the "
                "ground-truth events (collapse, default, recovery, fraud burst) as dotted lines.")


def _plot_quality(runs: Mapping[str, Any], start: int, gate: Mapping[str, Any]) -> str:
    engine_runs = {n: r for n, r in runs.items() if r["series"]["quality"]}
    if not engine_runs:
        return "<p>No model snapshot was taken (too few labels).</p>"

    def draw(fig: Any) -> None:
        ax1, ax2, ax3 = fig.subplots(1, 3)
        for n, r in engine_runs.items():
            q = r["series"]["quality"]
            xs = [(p[0] - start) / DAY_MS for p in q]
            style = {"color": COLORS.get(n), "label": LABELS.get(n, n), "marker": ".",
                     "ms": 3, "ls": STYLES.get(n, "-")}
            # The rolling AUC reads 0.0 while its window lacks a class: undefined, a gap.
            ax1.plot(xs, [p[2] if p[2] > 0 else math.nan for p in q], **style)
            ax2.plot(xs, [p[3] for p in q], **style)
        ax1.axhline(gate["min_auc"], color="#999", ls="--", lw=1, label="gate: min_auc")
        ax2.axhline(gate["max_log_loss"], color="#999", ls="--", lw=1,
                    label="gate: max_log_loss")
        ax1.set_title("rolling prequential ROC AUC", fontsize=9)
        ax2.set_title("rolling prequential log loss", fontsize=9)
        for ax in (ax1, ax2):
            ax.set_xlabel("day (at each model snapshot)")
        ax1.legend(fontsize=7)
        ax2.legend(fontsize=7)
        champ = runs.get("champion")
        if champ is not None:
            src = champ["series"].get("decisions_by_source", {})
            days = sorted(int(d) for d in src)
            model = [src[str(d)].get("model", 0) for d in days]
            rules = [src[str(d)].get("rules", 0) for d in days]
            ax3.stackplot(days, model, rules, labels=["model decided", "rules decided"],
                          colors=["#3b7dd8", "#bbbbbb"])
            ax3.set_title("champion: decisions per day by risk source", fontsize=9)
            ax3.set_xlabel("day")
            ax3.legend(fontsize=7, loc="upper left")

    return _png(draw, (13, 3.4), "Three charts over the days of the horizon: the rolling "
                "prequential ROC AUC and log loss of the model at each snapshot per run, with "
                "the policy's gate thresholds as dashed lines (gaps where the AUC is undefined), "
                "and the champion's decisions per day, stacked by whether the model or the rules "
                "scored them.")


def _auc(v: float | None) -> str:
    return "—" if v is None else f"{v:.3f}"


def _goals(data: Mapping[str, Any]) -> str:
    rows = []
    for g in data.get("goals", []):
        met = g["met"]
        cls = "better" if met else ("worse" if met is False else "")
        mark = "met" if met else ("not met" if met is False else "not measurable")
        v = g["measured"]
        shown = f"{v:.4g}" if isinstance(v, float) else ("—" if v is None else str(v))
        rows.append(f"<tr><td>{_e(g['goal'])}</td><td>{_e(shown)}</td><td>{_e(g['target'])}"
                    f"</td><td class='{cls}'>{mark}</td></tr>")
    return ("<table><thead><tr><th>goal (issue 17)</th><th>measured (champion)</th>"
            "<th>target</th><th></th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>")


def _changes(data: Mapping[str, Any]) -> str:
    rows = []
    for run, figures in data.get("changes_vs_baselines", {}).items():
        for key, ch in figures.items():
            cells = "".join(
                f"<td>{_e('—' if ch[k] is None else f'{ch[k]:+.1f} %')}</td>"
                for k in ("vs_static_pct", "vs_monthly_pct"))
            rows.append(f"<tr><td>{_e(LABELS.get(run, run))}</td><td>{_e(key)}</td>{cells}</tr>")
    return ("<table><thead><tr><th>run</th><th>figure</th><th>vs static</th><th>vs monthly</th>"
            "</tr></thead><tbody>" + "".join(rows) + "</tbody></table>"
            "<p class='meta'>— : the baseline's figure is 0, a change from nothing has no "
            "ratio.</p>")


def _raises_and_reasons(data: Mapping[str, Any]) -> str:
    out = []
    for n, r in data["runs"].items():
        m = r["metrics"]
        if not m.get("reasons"):
            continue
        ra, g = m["raises"], m["good_users"]
        out.append(f"<h3>{_e(LABELS.get(n, n))}</h3><p>raises: {ra['count']:,} "
                   f"(mean size {_e(_fmt(ra['mean_size'], 'money'))}, total "
                   f"{_e(_fmt(ra['amount_total'], 'money'))}); good users raised: "
                   f"{g['raised']:,} of {g['count']:,} ({_e(_fmt(g['raised_share'], 'share'))})"
                   "</p>")
        rows = []
        for action in ("SUSPEND", "RELAPSE", "CUT", "HOLD_LINE", "RELEASE"):
            for reason, k in m["reasons"].get(action, {}).items():
                rows.append(f"<tr><td>{action}</td><td>{_e(reason)}</td><td>{k:,}</td></tr>")
        out.append("<table><thead><tr><th>action</th><th>main reason</th><th>decisions</th>"
                   "</tr></thead><tbody>" + "".join(rows) + "</tbody></table>")
    return "".join(out)


def _model_tables(data: Mapping[str, Any]) -> str:
    out = []
    for n, r in data["runs"].items():
        model, bench = r.get("model") or {}, r.get("benchmark") or {}
        if not model:
            continue
        seg = "".join(
            f"<tr><td>{_e(k)}</td><td>{v['n']:,}</td><td>{_e(_auc(v['roc_auc']))}</td></tr>"
            for k, v in (model.get("segments") or {}).items())
        cal = "".join(
            f"<tr><td>{b['lo']:.1f} to {b['hi']:.1f}</td><td>{int(b['n']):,}</td>"
            f"<td>{_e(_fmt(b['mean_pd'], 'share'))}</td>"
            f"<td>{_e(_fmt(b['observed'], 'share'))}</td></tr>"
            for b in model.get("calibration", []) if b.get("n"))
        on, off = bench.get("online_roc_auc"), bench.get("offline_roc_auc")
        out.append(
            f"<h3>{_e(LABELS.get(n, n))}</h3>"
            f"<p>Honest benchmark on the later half of the current-at-issue labels "
            f"({bench.get('test', 0):,} labels, {bench.get('positives_test', 0):,} defaults): "
            f"prequential (online) ROC AUC {_e(_auc(on))}, offline logistic regression fit "
            f"in hindsight on the earlier half {_e(_auc(off))}.</p>"
            "<table><thead><tr><th>segment (rolling window)</th><th>labels</th><th>ROC AUC</th>"
            "</tr></thead><tbody>" + seg + "</tbody></table>"
            "<table><thead><tr><th>predicted PD</th><th>labels</th><th>mean predicted</th>"
            "<th>observed default rate</th></tr></thead><tbody>" + cal + "</tbody></table>")
    return "".join(out)


# -- the page -------------------------------------------------------------------------------


_CSS: Final = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1150px; color: #222; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: 0.2em; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.9em; }
th, td { border: 1px solid #ddd; padding: 0.3em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
thead th { background: #f4f4f4; }
td.better { background: #e6f4e1; } td.worse { background: #fbe3e4; }
.meta { color: #555; } img { max-width: 100%; } dt { font-weight: 600; margin-top: 0.5em; }
code { background: #f4f4f4; padding: 0 0.2em; }
"""


def _cell(delta: Any, better: str, unit: str) -> str:
    cls = ""
    if isinstance(delta, int | float) and delta and better in ("lower", "higher"):
        good = delta < 0 if better == "lower" else delta > 0
        cls = ' class="better"' if good else ' class="worse"'
    return f"<td{cls}>{_e(_fmt(delta, unit, signed=True))}</td>"


def _headline(data: Mapping[str, Any]) -> str:
    runs = data["runs"]
    diffs = data["differences"]
    cols = [(f"Δ {LABELS['champion'].split(' (')[0]} - static", "champion_minus_static"),
            ("Δ champion - monthly", "champion_minus_monthly")]
    if "challenger_minus_champion" in diffs:
        cols.insert(0, ("Δ challenger - champion", "challenger_minus_champion"))
    head = "".join(f"<th>{_e(LABELS.get(n, n))}</th>" for n in runs)
    head += "".join(f"<th>{_e(t)}</th>" for t, _ in cols)
    body = []
    for key, title, unit, better in HEADLINE:
        cells = "".join(f"<td>{_e(_fmt(_get(r['metrics'], key), unit))}</td>"
                        for r in runs.values())
        cells += "".join(_cell(diffs[k].get(key), better, unit) for _, k in cols)
        body.append(f"<tr><td>{_e(title)}</td>{cells}</tr>")
    return (f"<table><thead><tr><th>figure</th>{head}</tr></thead><tbody>"
            + "".join(body) + "</tbody></table>"
            "<p class='meta'>Money in major units. Green: better, red: worse, by the figure's "
            "own sense (fewer losses, more credit to good users, fewer good users hurt, "
            "faster suspension of defaulters).</p>")


def _persona_table(data: Mapping[str, Any]) -> str:
    runs = data["runs"]
    personas = list(data["population"]["by_persona"])
    head = "".join(f"<th>{_e(LABELS.get(n, n))}<br>suspended / cut / held / raised<br>"
                   "spend declined</th>" for n in runs)
    rows = []
    for p in personas:
        cells = "".join(
            "<td>{suspended} / {cut} / {held} / {raised}<br>{d}</td>".format(
                **r["metrics"]["by_persona"][p],
                d=_e(_fmt(r["metrics"]["by_persona"][p]["declined_amount"], "money")))
            for r in runs.values())
        rows.append(f"<tr><td>{_e(p)}</td><td>{data['population']['by_persona'][p]}</td>"
                    f"{cells}</tr>")
    return (f"<table><thead><tr><th>persona</th><th>users</th>{head}</tr></thead><tbody>"
            + "".join(rows) + "</tbody></table>")


def _runs_table(data: Mapping[str, Any]) -> str:
    rows = []
    for n, r in data["runs"].items():
        model = r.get("model") or {}
        auc = model.get("prequential_roc_auc")
        rows.append(
            f"<tr><td>{_e(LABELS.get(n, n))}</td><td>{_e(r['mode'])}</td>"
            f"<td>{_e(r['policy_file'] or '—')}</td>"
            f"<td><code>{_e((r['policy_version'] or '—')[:12])}</code></td>"
            f"<td>{r['seconds']:.1f}</td>"
            f"<td>{_e(r.get('replay', {}).get('decisions', '—'))}</td>"
            f"<td>{_e(model.get('labels_learnt', '—'))}</td>"
            f"<td>{_e(f'{auc:.3f}' if isinstance(auc, float) else '—')}</td>"
            f"<td>{_e(_fmt(r['metrics']['declined']['amount'], 'money'))}</td></tr>")
    return ("<table><thead><tr><th>run</th><th>mode</th><th>policy file</th><th>version</th>"
            "<th>seconds</th><th>decisions</th><th>labels learnt</th><th>final AUC</th>"
            "<th>spend declined</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>")


_BASELINES: Final = """
<dl>
<dt>static limit</dt><dd>The limit granted at opening stays for the whole horizon; the account
is never cut or suspended. No engine runs. This is what the log's own bank did.</dd>
<dt>monthly batch review (the incumbent practice)</dt><dd>The champion policy and the same
learning model run on the same events, but the card sees their decisions only once per
statement cycle: the opening takes effect at once; then at each of the account's statements
(an account with nothing owed gets none and is reviewed 31 days after its last review instead)
the account's limit and status are read from the engine and held until the next review. The
review sees exactly what the real-time engine knows at that moment, so the difference
<em>champion - monthly</em> is the value of acting in real time, nothing else. (A batch
process would also run its own state machine on review dates; holding the real-time state
isolates latency instead.)</dd>
<dt>champion / challenger</dt><dd>The policy as the worker applies it: every decision takes
effect at the event that caused it.</dd>
</dl>
<p>Every run authorises the log's spending against its own limit, as core banking does with
the limits limitstream publishes: a purchase or cash advance that would take the balance over
the run's limit, or that arrives while the account is not ACTIVE or PROBATION, is declined,
never reaches the engine nor the ledger, and a later refund of the same merchant category and
country no larger than a declined amount is dropped with it. Payments are the log's (the
users' behaviour is not re-simulated under the run's limits), applied to the run's balance and
floored at 0. The balance is the engine's own fold: purchases + cash advances - refunds -
payments, never below 0. The purchases the simulator's own bank declined (its limit is the
static one) never reach the log; every run's card is offered them at their time as well, so
that every run, static included, declines the same demand where its credit falls short: one
the run authorises is spent (ledger and engine; the log's payments, sized on the simulator's
balance, do not repay it, so a run that grants more credit carries more balance).</p>
"""


def render_html(data: Mapping[str, Any]) -> str:
    """The self-contained report page."""
    runs = data["runs"]
    h = data["horizon"]
    pop = data["population"]
    defs = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in data["definitions"].items())
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        "<title>limitstream backtest</title>", f"<style>{_CSS}</style></head><body>",
        "<h1>limitstream backtest</h1>",
        f"<p class='meta'>log <code>{_e(data['log'])}</code>, truth "
        f"<code>{_e(data['truth'])}</code> · {_date(h['start_ts'])} to {_date(h['end_ts'])} "
        f"({h['days']} days) · {pop['users']:,} users, {pop['defaulters']:,} defaulters, "
        f"{pop['good_users']:,} good users · currency {_e(data['settings']['currency'])}</p>",
        "<h2>The answer</h2>", _headline(data),
        "<h2>Goals</h2>", _goals(data),
        "<h2>Changes against the baselines</h2>", _changes(data),
        "<h2>Raises, and the reasons behind suspensions, cuts and holds</h2>",
        _raises_and_reasons(data),
        "<h2>Runs</h2>", _runs_table(data), _BASELINES,
        "<h2>Losses on defaulters</h2>", _plot_losses(runs),
        "<h2>Credit extended to good users</h2>", _plot_good_credit(runs),
        "<h2>Whom it hurt, by persona</h2>",
        "<p>Users ever suspended / ever cut (limit lowered while drawable) / ever held for "
        "review / ever raised, and their spend declined, per persona (ground truth). The good "
        "users are every persona but those that stop paying (income_collapse, "
        "over_indebted_drifter, bust_out).</p>", _persona_table(data),
        "<h2>From the first missed payment to suspension</h2>",
        _plot_time_to_suspension(runs),
        "<h2>State mix over time</h2>", _plot_state_mix(runs),
        "<h2>Limit trajectories of sample users</h2>",
        "<p>Drawable limit per run (0 while suspended); grey: the champion run's balance; "
        "dotted: ground-truth events. Users chosen from the truth alone (the first of each "
        "persona whose story it is), never from a run's outcome.</p>",
        _plot_samples(data, runs),
        "<h2>Prequential model quality over time</h2>",
        "<p>The model learns in process from delayed labels (each example scored before it is "
        "learnt) and the scorer installs a snapshot every "
        f"{data['settings']['snapshot_every_labels']} labels, as live. The rule score decides "
        "until the model passes the policy's gate.</p>",
        _plot_quality(runs, h["start_ts"], data["gate"]),
        "<h2>The model: segments, calibration, benchmark</h2>",
        f"<p>A default is {data['gate']['label_dpd']}+ days past due within "
        f"{data['gate']['label_horizon_days']} days of the due date; only installments issued "
        "while the account was current are learnt (arrears-at-issue ones are scored apart).</p>",
        _model_tables(data),
        "<h2>Definitions</h2>", f"<dl>{defs}</dl>",
        "<p class='meta'>Every figure and series of this page is in "
        f"<code>{JSON_NAME}</code> beside it.</p>",
        "</body></html>",
    ]
    return "\n".join(parts)
