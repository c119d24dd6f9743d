"""``edgeseg boards``: list the board profiles, detect this machine's board, show one profile."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import click

from .common import translate_errors


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain left-aligned text table."""
    cells = [[str(h) for h in headers]] + [[("-" if c is None else str(c)) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _detect_text(detections: List[Any], facts: Any) -> str:
    from ..tools.profiles import convert_command, convert_gap

    lines = [f"System: {facts.system} {facts.machine}"
             + (f", device-tree model {facts.device_tree_model!r}" if facts.device_tree_model else "")
             + (f", CPU vendor {facts.cpu_vendor}" if facts.cpu_vendor else "")
             + (f", USB ids {', '.join(sorted(facts.usb_ids))}" if facts.usb_ids else "")]
    matched = [d for d in detections if d.matched]
    if not matched:
        lines.append("Board: none of the profiles matches this machine (see `edgeseg boards` for the list).")
    else:
        best = matched[0]
        p = best.profile
        lines.append(f"Board: {p.name} ({p.title})")
        lines.append(f"  because: {'; '.join(best.reasons)}")
        lines.append(f"  prefers: formats {', '.join(p.formats)}; backends {', '.join(p.backends)}; "
                     f"{p.precision} at {p.imgsz} px, threads {p.threads or 'auto'}")
        lines.append(f"  model:   {convert_command(p)}")
        if convert_gap(p):
            lines.append(f"  note:    {convert_gap(p)}")
        for other in matched[1:]:
            lines.append(f"Also matches: {other.profile.name} (priority {other.profile.priority}): {'; '.join(other.reasons)}")
    return "\n".join(lines)


@click.group(invoke_without_command=True)
@click.option("--detect", "do_detect", is_flag=True, help="Show which profile matches this machine, and why.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option("--root", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Read /proc, /sys and /etc under this folder instead of / (for checking a fixture tree).")
@click.option("--system", default=None, help="With --detect: pretend platform.system() is this (Linux, Darwin, Windows).")
@click.option("--machine", default=None, help="With --detect: pretend platform.machine() is this (x86_64, aarch64, arm64).")
@click.pass_context
@translate_errors
def boards(ctx: click.Context, do_detect: bool, as_json: bool, root: Optional[Path],
           system: Optional[str], machine: Optional[str]) -> None:
    """List the board profiles, detect this machine's board, or show one profile.

    A profile names the model formats and backends to prefer on a board, the precision, input
    size, threads, backend options, camera defaults and the `edgeseg convert` recipe for its
    model. `edgeseg run --board auto|NAME` applies one; explicit flags win.

    \b
    Examples:
      edgeseg boards                       # table of all profiles
      edgeseg boards --detect              # which board is this, and why
      edgeseg boards show raspberry-pi-5   # one profile in full (YAML)
    """
    if ctx.invoked_subcommand is not None:
        return
    from ..tools.profiles import detect_all, gather_facts, load_profiles

    profiles = load_profiles()
    if do_detect or root is not None or system is not None or machine is not None:
        facts = gather_facts(root if root is not None else "/", system=system, machine=machine)
        detections = detect_all(facts, profiles)
        if as_json:
            best = detections[0] if detections and detections[0].matched else None
            click.echo(json.dumps({
                "board": best.profile.name if best else None,
                "facts": facts.to_dict(),
                "profiles": [d.to_dict() for d in detections],
            }, indent=2))
        else:
            click.echo(_detect_text(detections, facts))
        return
    if as_json:
        click.echo(json.dumps([p.to_dict() for p in profiles.values()], indent=2))
        return
    rows = [[p.name, p.title, ", ".join(p.formats), ", ".join(p.backends), p.precision, p.imgsz,
             p.threads or "auto"] for p in sorted(profiles.values(), key=lambda p: (-p.priority, p.name))]
    click.echo(table(["board", "title", "formats", "backends", "precision", "imgsz", "threads"], rows))
    click.echo("\nShow one with `edgeseg boards show NAME`; detect this machine with `edgeseg boards --detect`.")


@boards.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of YAML.")
@translate_errors
def show(name: str, as_json: bool) -> None:
    """Print one board profile in full, with the convert command for its model.

    \b
    Example:
      edgeseg boards show jetson-orin-nano
    """
    import yaml

    from ..tools.profiles import get_profile

    data: Dict[str, Any] = get_profile(name).to_dict()
    if as_json:
        click.echo(json.dumps(data, indent=2))
    else:
        click.echo(yaml.safe_dump(data, sort_keys=False, width=120).rstrip())
