"""The latent explorer: one self-contained HTML page per analysis (Bokeh, resources inline).

Every analysed patch shown is a point of the latent plane (the analysis's projection beyond
two dimensions). A selector colours the points by lesion label, lesion fraction or any score;
hovering a point shows the patch and where it lies (case, slice, row, col) with its scores;
clicking it shows the patch outlined on its slice. The page loads nothing from anywhere:
BokehJS, the data and every image are inside it, so it opens offline and can be mailed.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import pandas as pd

from patchvae.artefacts import EXPLORER_FILE, PATCH_SCORES_FILE, AnalysisResult, score_title
from patchvae.errors import DataError
from patchvae.io import write_text_atomic
from patchvae.report.draw import figure_data

_ZOOM = 3  # screen pixels per voxel of a patch or slice image

# on a click: the chosen patch outlined on its slice (Bokeh runs this in the page)
_SHOW_ON_SLICE = """
// the topmost of the points under the click: the last one drawn
const i = Math.max(...source.selected.indices);
if (!Number.isFinite(i)) { return; }
const d = source.data;
const r = d.row[i] * zoom, c = d.col[i] * zoom, s = size * zoom;
panel.text = `<b>${d.case_id[i]}, slice ${d.slice[i]}</b> (row ${d.row[i]}, col ${d.col[i]})` +
  `<div style="position:relative;display:inline-block">` +
  `<img src="${slices[d.slice_image[i]]}" style="width:${width * zoom}px;` +
  `image-rendering:pixelated;display:block">` +
  `<div style="position:absolute;left:${c}px;top:${r}px;width:${s}px;height:${s}px;` +
  `border:2px solid #ff3030;box-sizing:border-box"></div></div>`;
"""

# on a new choice in the selector: the points take that column's values as colours
_RECOLOUR = """
const d = source.data;
d.colour = d[columns[cb_obj.value]].slice();
const finite = d.colour.filter(Number.isFinite);
mapper.low = Math.min(...finite);
mapper.high = Math.max(...finite);
bar.title = cb_obj.value;
source.change.emit();
"""


def _png(image: np.ndarray) -> str:
    """An 8-bit grey image as a PNG data URI."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def explorer_columns(result: AnalysisResult, table: pd.DataFrame) -> dict[str, str]:
    """Selector entry (words) -> table column: label, lesion fraction, every score."""
    columns = {"lesion label": "label", "lesion fraction": "lesion_fraction"}
    for name in result.patch_scores:
        if name in table:
            columns[score_title(name)] = name
    return columns


def build_explorer(folder: Path, result: AnalysisResult, out: Path) -> Path | None:
    """Write ``out/explorer.html`` for the analysis in ``folder``; None where the analysis
    holds no explorer data (made by an older patchvae)."""
    from bokeh.embed import file_html
    from bokeh.layouts import column, row
    from bokeh.models import (  # type: ignore[attr-defined]
        ColorBar,
        ColumnDataSource,
        CustomJS,
        Div,
        HoverTool,
        LinearColorMapper,
        Select,
        TapTool,
    )
    from bokeh.plotting import figure
    from bokeh.resources import INLINE

    data = figure_data(folder)
    table_path = folder / PATCH_SCORES_FILE
    if data is None or "explorer_index" not in data or not table_path.is_file():
        return None
    try:
        table = pd.read_parquet(table_path)
    except (OSError, ValueError) as exc:
        raise DataError(table_path, f"patch table is damaged ({type(exc).__name__})") from None
    # lesion patches drawn last, so the few of them lie on top of the many healthy ones
    keep = np.argsort(table.label.to_numpy()[data["explorer_index"]], kind="stable")
    index = data["explorer_index"][keep]
    shown = table.iloc[index].reset_index(drop=True)
    columns = explorer_columns(result, shown)
    coords = data["coords"][index]
    slices = data["explorer_slices"]
    source = ColumnDataSource(
        {
            "x": coords[:, 0],
            "y": coords[:, 1],
            "case_id": shown.case_id.astype(str).to_list(),
            "slice": shown.slice.to_numpy(),
            "row": shown.row.to_numpy(),
            "col": shown.col.to_numpy(),
            "slice_image": data["explorer_slice_of"][keep],
            "patch": [_png(image) for image in data["explorer_pixels"][keep]],
            **{name: shown[name].to_numpy(dtype=float) for name in columns.values()},
            "colour": shown.label.to_numpy(dtype=float),
        }
    )
    mapper = LinearColorMapper(palette="Viridis256", low=-1, high=1)
    axes = result.projection.get("axis_labels", ["latent 1", "latent 2"])
    plot = figure(
        width=640,
        height=560,
        title=f"Held-out patches in the latent plane ({len(shown)} of {len(table)} shown)",
        x_axis_label=str(axes[0]),
        y_axis_label=str(axes[1]),
        tools="pan,wheel_zoom,box_zoom,reset",
        name="latent",
    )
    plot.scatter(
        "x", "y", source=source, size=6, alpha=0.8, line_color=None,
        fill_color={"field": "colour", "transform": mapper},
        selection_line_color="#ff3030", selection_line_width=2, selection_fill_alpha=1.0,
        nonselection_fill_alpha=0.45,
    )  # fmt: skip
    bar = ColorBar(color_mapper=mapper, title="lesion label", width=12)
    plot.add_layout(bar, "right")
    formats = {"label": "0", "lesion_fraction": "0.00"}
    scores = "".join(
        f"<div>{words}: @{{{name}}}{{{formats.get(name, '0.000')}}}</div>"
        for words, name in columns.items()
    )
    plot.add_tools(
        TapTool(mode="replace"),
        HoverTool(
            tooltips=(
                f'<div><img src="@patch" width="{28 * _ZOOM}" style="image-rendering:'
                'pixelated;border:1px solid #888"></div>'
                "<div><b>@case_id</b>, slice @slice, row @row, col @col</div>" + scores
            )
        ),
    )
    panel = Div(text="Click a point to see its patch on its slice.", width=420, name="slice")
    size = int(data["explorer_pixels"].shape[-1])
    source.selected.js_on_change(
        "indices",
        CustomJS(
            args={
                "source": source,
                "panel": panel,
                "slices": [_png(s) for s in slices],
                "zoom": _ZOOM / 2,
                "size": size,
                "width": int(slices.shape[-1]) if slices.size else size,
            },
            code=_SHOW_ON_SLICE,
        ),
    )
    selector = Select(title="Colour by", value="lesion label", options=list(columns), name="colour")
    selector.js_on_change(
        "value",
        CustomJS(
            args={"source": source, "mapper": mapper, "bar": bar, "columns": columns},
            code=_RECOLOUR,
        ),
    )
    note = Div(
        text=(
            f"<p>{result.projection.get('description', '')}. Every lesion patch is shown, "
            "then healthy ones drawn at random. Hover a point for its patch and scores; click "
            "it to see it on its slice.</p>"
        ),
        width=640,
    )
    page = file_html(
        row(column(selector, plot, note), panel), INLINE, title="patchvae latent explorer"
    )
    out.mkdir(parents=True, exist_ok=True)
    return write_text_atomic(out / EXPLORER_FILE, page)
