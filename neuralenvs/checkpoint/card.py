"""The model card (``README.md``): the checkpoint's config, provenance and measurements in prose and
tables."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from neuralenvs.checkpoint.format import CARD_FILE, CONFIG_FILE, STARTS_FILE, WEIGHTS_FILE

# --------------------------------------------------------------------------------------------------
# Model card


def make_model_card(config: Mapping[str, Any], *, name: str | None = None) -> str:
    """A Markdown model card generated from a checkpoint's config (what ``card=None`` writes)."""
    prov = config.get("provenance") or {}
    metrics = config.get("metrics") or {}
    family = config.get("family", "?")
    game = config.get("game")
    title = name or (f"{game}-{family}" if game else f"{family} world model")
    h, w, c = config.get("obs_shape", ["?", "?", "?"])
    meanings = config.get("action_meanings") or []

    def cell(value: Any) -> str:
        if value is None:
            return "not recorded"
        if isinstance(value, float):
            value = f"{value:.6g}"
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = [
        f"# {title}",
        "",
        f"A **{family}** world model of **{game or 'a custom environment'}** for "
        "neuralenvs: a neural network that dreams the game frame by frame, "
        "with rewards and episode ends from learned heads.",
        "",
        "## Use",
        "",
        "```python",
        "from neuralenvs.checkpoint import load_checkpoint, build_world_model",
        "",
        f'checkpoint = load_checkpoint("{name or "path/to/checkpoint"}")',
        "model = build_world_model(checkpoint)  # on the GPU if there is one",
        "```",
        "",
        "## Model",
        "",
        "| | |",
        "|---|---|",
        f"| family | {cell(family)} |",
        f"| game | {cell(game)} |",
        f"| observation | {h}x{w}x{c} uint8 frames |",
        f"| actions | {len(meanings)}: {cell(', '.join(meanings))} |",
        f"| parameters | {cell(prov.get('num_parameters'))} |",
        f"| weights stored as | {cell(config.get('weights_dtype'))} |",
        f"| start bank | {cell(prov.get('start_bank'))} |",
        "",
        "## Training data and budget",
        "",
        "| | |",
        "|---|---|",
        f"| data | {cell(prov.get('data'))} |",
        f"| real environment steps | {cell(prov.get('real_steps'))} |",
        f"| training steps | {cell(prov.get('training_steps'))} |",
        f"| hardware | {cell(prov.get('hardware'))} |",
        f"| wall-clock seconds | {cell(prov.get('wall_clock_seconds'))} |",
        "",
        "## Metrics",
        "",
    ]
    lines += _measurement_tables(metrics)
    flat = _flatten({k: v for k, v in metrics.items() if k not in ("fidelity", "utility", "utility_seeds", "transfer")})
    if flat:
        lines += ["| metric | value |", "|---|---|"]
        lines += [f"| {cell(key)} | {cell(value)} |" for key, value in flat]
    elif not metrics:
        lines.append("No metrics were recorded when this checkpoint was saved.")
    shown = {
        "data",
        "real_steps",
        "training_steps",
        "hardware",
        "wall_clock_seconds",
        "num_parameters",
        "start_bank",
    }
    extra = [(k, v) for k, v in _flatten(prov) if k.split(".")[0] not in shown]
    lines += ["", "## Provenance", "", "| | |", "|---|---|"]
    lines += [f"| {cell(key)} | {cell(value)} |" for key, value in extra]
    lines += [
        "",
        "## Files",
        "",
        f"`{CONFIG_FILE}` (format version {config.get('format_version')}: configuration, provenance, "
        f"metrics, checksums), `{WEIGHTS_FILE}` (weights), `{STARTS_FILE}` (real context segments "
        f"dreams start from), `{CARD_FILE}` (this card). Loading never unpickles.",
        "",
    ]
    return "\n".join(lines)


def _measurement_tables(metrics: Mapping[str, Any]) -> list[str]:
    """Readable tables for the fidelity and utility results of ``neuralenvs.bench``."""
    lines: list[str] = []
    fidelity = metrics.get("fidelity")
    if isinstance(fidelity, Mapping) and isinstance(fidelity.get("steps"), Mapping):
        lines += [
            f"Fidelity on held-out real episodes ({fidelity.get('windows')} dreams fed the real actions), "
            "against repeating the last real frame:",
            "",
            "| step | PSNR dream | PSNR repeat-last | SSIM dream | SSIM repeat-last | n |",
            "|---|---|---|---|---|---|",
        ]
        for step, row in fidelity["steps"].items():
            if isinstance(row, Mapping):
                values = [row.get(k) for k in ("psnr", "psnr_baseline", "ssim", "ssim_baseline")]
                cells = " | ".join(f"{v:.3f}" if isinstance(v, (int, float)) else "?" for v in values)
                lines.append(f"| {step} | {cells} | {row.get('n')} |")
        for head in ("reward", "termination"):
            pr = fidelity.get(head)
            if isinstance(pr, Mapping):
                lines.append(
                    f"\n{head}: precision {pr.get('precision')}, recall {pr.get('recall')} "
                    f"({pr.get('predicted')} predicted, {pr.get('real')} real nonzero steps)"
                )
        lines.append("")
    utility = metrics.get("utility")
    if isinstance(utility, Mapping) and isinstance(utility.get("agent"), Mapping):
        agent, random = utility["agent"], utility.get("random") or {}
        lines += [
            f"Utility: {str(utility.get('algo')).upper()} trained only in the dream for "
            f"{utility.get('dream_steps')} dreamed steps, then {agent.get('n_episodes')} real games:",
            "",
            "| policy | real return (mean ± s.e.) | HNS |",
            "|---|---|---|",
            f"| trained in dream | {agent.get('mean'):.2f} ± {agent.get('stderr'):.2f} "
            f"| {utility.get('agent_hns'):.3f} |",
            f"| random | {random.get('mean', float('nan')):.2f} ± {random.get('stderr', float('nan')):.2f} "
            f"| {utility.get('random_hns', float('nan')):.3f} |",
            "",
        ]
    if isinstance(metrics.get("utility_seeds"), Mapping):
        lines += _seeds_table(metrics["utility_seeds"])
    if isinstance(metrics.get("transfer"), Mapping):
        lines += _transfer_table(metrics["transfer"])
    return lines


def _seeds_table(summary: Mapping[str, Any]) -> list[str]:
    """Markdown lines of one dream's agents over seeds (``neuralenvs.bench.transfer.across_seeds``)."""
    steps = " or ".join(str(s) for s in summary.get("dream_steps") or [])
    lines = [
        f"The same over {len(summary['seeds'])} agent seeds ({steps} dreamed steps each):",
        "",
        "| seed | trained in dream | random | gap in s.e. |",
        "|---|---|---|---|",
    ]
    for row in summary["seeds"]:
        agent, random = row["agent"], row["random"]
        lines.append(f"| {row['seed']} | {agent['mean']:.1f} ± {agent['stderr']:.1f} "
                     f"| {random['mean']:.1f} ± {random['stderr']:.1f} | {row['gap_over_stderr']:+.1f} |")
    lines.append(f"| mean | {summary['agent_mean']:.1f} ± {summary['agent_mean_stderr_across_seeds']:.1f} "
                 f"(s.e. across seeds) | {summary['random_mean']:.1f} | |")
    return lines + [""]


def _transfer_table(record: Mapping[str, Any]) -> list[str]:
    """Markdown lines of a transfer record (``neuralenvs.bench.transfer.compare_to_real_agents``)."""

    def score(s: Mapping[str, Any]) -> str:
        return f"{s['mean']:.1f} ± {s['stderr']:.1f}"

    def gap(g: Mapping[str, Any]) -> str:
        return f"{g['gap']:+.1f} ({g['gap_over_stderr']:+.1f})"

    lines = [
        f"Transfer ({record['game']}): the dream agent against random play and against the same agent "
        "trained on the real game:",
        "",
        "| policy | real return (mean ± s.e.) | dream agent minus it (s.e.) |",
        "|---|---|---|",
        f"| trained in dream | {score(record['dream_agent'])} | |",
        f"| random | {score(record['random'])} | {gap(record['dream_agent_vs_random'])} |",
    ]
    compared = {"same_agent_steps": "agent steps as in the dream", "same_real_steps": "real steps as built the dream"}
    for key, what in compared.items():
        row = record.get(key)
        if row:
            lines.append(f"| real-game agent, as many {what} ({row['agent_steps']}) | {score(row['real_agent'])} "
                         f"| {gap(row['dream_agent_vs_real_agent'])} |")
    same = record.get("same_agent_steps") or {}
    if same.get("utility_ratio") is not None:
        lines += ["", f"Utility ratio (dream agent - random) / (real agent - random): {same['utility_ratio']:.2f}"]
    budget = record.get("budget") or {}
    if budget:
        lines += ["", "Whole budget: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in budget.items())]
    return lines + [""]


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for key, value in tree.items():
        full = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out += _flatten(value, full + ".")
        elif isinstance(value, list):
            out.append((full, ", ".join(map(str, value))))
        else:
            out.append((full, value))
    return out


