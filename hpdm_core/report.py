"""Ablation tables in the paper's format (Table 2 / Table 3), as rows of strings for Rich or markdown."""

from __future__ import annotations


def resolution_label(size: list[int]) -> str:
    """[16, 64, 64] -> '16×64²' (the paper's notation); unequal sides -> '8×36×64'."""
    frames, height, width = size
    return f"{frames}×{height}²" if height == width else f"{frames}×{height}×{width}"


def notes(proxy: bool, num: int) -> list[str]:
    out = []
    if proxy:
        out.append("FD (random I3D): Fréchet distance in the feature space of a fixed, seeded random-weight I3D. "
                   "It ranks runs against each other; it is NOT FVD and not comparable with published numbers. "
                   "Pass --i3d i3d_torchscript.pt (or i3d_pretrained_400.pt) for FVD.")
    if num != 2048:
        out.append(f"Distances over {num} generated and {num} real videos: compare only with @{num} numbers.")
    out.append("Coarse MAE: mean |box-downsampled final video - lower level| (pixels in [-1, 1]), levels 0..L-1. "
               "Seam: neighbour differences across tile borders / inside tiles (1.0 = seamless).")
    return out


def _number(value, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def table_data(results: dict) -> tuple[str, list[str], list[list[str]]]:
    """(title, headers, rows) of a results dict from hpdm_core.ablation."""
    metric = f"{results['metric']}@{results['num']}"
    levels = [str(level) for level in results["levels"]]
    architecture = results["suite"] == "architecture"
    headers = ["Setup" if architecture else "Inference strategy"]
    headers += [f"{metric} {resolution_label(results['resolutions'][level])}" for level in levels]
    headers += ["Training speed ↑ (videos/s)"] if architecture else ["Sampling time (s)"]
    headers += ["Coarse MAE ↓", "Seam ↓"]
    rows = []
    for row in results["rows"]:
        cells = [row["label"]] + [_number(row["fd"].get(level)) for level in levels]
        cells.append(_number(row.get("videos_per_s")) if architecture else _number(row.get("sample_seconds"), 1))
        cells.append("/".join(_number(v, 4) for v in row["consistency"]["coarse_mae"]) or "-")
        cells.append(_number(row["consistency"]["seam"].get("all"), 3))
        rows.append(cells)
    table = "Table 2: architecture ablation" if architecture else "Table 3: overlapped inference strategies"
    proxy = " — PROXY, not comparable with published FVD" if results["proxy"] else ""
    return f"{table} ({metric}{proxy})", headers, rows


def to_markdown(results: dict) -> str:
    title, headers, rows = table_data(results)
    lines = [f"### {title}", "", "| " + " | ".join(headers) + " |",
             "|" + "|".join([" --- "] + [" ---: "] * (len(headers) - 1)) + "|"]
    lines += ["| " + " | ".join(cells) + " |" for cells in rows]
    lines += [""] + [f"- {note}" for note in results["notes"]]
    return "\n".join(lines) + "\n"
