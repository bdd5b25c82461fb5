"""Small pieces every notebook's widgets share: an error panel, a guard for callbacks, a save button.

An exception inside an ipywidgets callback is otherwise swallowed (it goes to JupyterLab's log
console, which nobody opens), so the figure just stops updating. `guarded(output)` shows the
traceback in an Output widget under the figure instead.

    out = error_output()
    @guarded(out)
    def on_change(change):
        fig.data[0].y = scores(slider.value)       # a library function; the widget only wires it
    slider.observe(on_change, names="value")
    display(figure_panel(fig, [slider], out, save=save_button(lambda: fig, "zero_shot_bars", out)))

Use `FigureWidget` from here rather than plotly's: the same class without a race that can leave it
empty in the browser (see its docstring).
"""
from __future__ import annotations

import contextlib
import functools
import traceback
from pathlib import Path
from typing import Callable, Iterable, Sequence

import ipywidgets as widgets
import plotly.graph_objects as go

from clipspace.figures import FORMATS, figure_dir, save_figure


class FigureWidget(go.FigureWidget):
    """`plotly.graph_objects.FigureWidget` whose first message to the browser already holds its data.

    plotly opens the widget's comm with empty `_widget_data`/`_widget_layout` and sends the figure
    as updates right after. anywidget (plotly >= 6) applies updates only once the widget's 5 MB
    script has loaded, while JupyterLab may draw the view as soon as the cell's output arrives: on a
    slow or busy machine the view draws first and stays empty (blank axes, no title), since plotly's
    view never redraws on a later `_widget_data`. Seen here with plotly 7.1, anywidget 0.11 and
    JupyterLab 4.6 (tests/test_browser.py). Opening the comm after the figure is built removes the
    race; updates afterwards (restyle, relayout) are unchanged.
    """

    def __init__(self, *args, **kwargs):
        self._clipspace_defer_open = True
        super().__init__(*args, **kwargs)
        self._clipspace_defer_open = False
        self.open()

    def open(self):
        if not getattr(self, "_clipspace_defer_open", False):
            super().open()


def error_output() -> widgets.Output:
    """An Output widget for a panel's messages and tracebacks (bordered so an error is noticed)."""
    return widgets.Output(layout=widgets.Layout(border="1px solid #ddd", padding="2px 6px", min_height="1.5em"))


def _append(output: widgets.Output, name: str, text: str) -> None:
    # Append to .outputs directly: works in a kernel (synced to the browser) and in plain pytest alike.
    output.outputs = output.outputs + ({"output_type": "stream", "name": name, "text": text},)


def callback_threads() -> int:
    """torch threads for a widget callback: all cores but one, left to the front end.

    While a callback runs, the Jupyter server and the browser are busy too (the slider moved, the
    figure will redraw). torch's default takes every core, and a thread the OS deschedules stalls
    the others at each op's barrier: on 2 cores under load, one text query cost 212 ms p95 with 2
    threads against ~24 ms with 1. Many cores lose one of them, which costs little.
    """
    import torch

    from clipspace.embedding import usable_cores

    return max(1, min(torch.get_num_threads(), usable_cores() - 1))


@contextlib.contextmanager
def torch_threads(n: int | None):
    """Run the block with `n` torch intra-op threads (None: unchanged), then restore the count."""
    import torch

    before = torch.get_num_threads()
    if n is not None and n != before:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def guarded(output: widgets.Output, threads: int | str | None = "auto") -> Callable:
    """Decorator for widget callbacks: clear `output`, run the callback (its prints go to `output`),
    and on an exception print the traceback into `output` instead of losing it. Returns None then.

    The callback runs with `threads` torch threads: "auto" is `callback_threads()` (one core left
    to the front end), None leaves torch's setting alone.
    `wrapper.last_error` holds the last exception (None after a call that succeeded).
    """
    def decorate(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            output.outputs = ()
            wrapper.last_error = None
            n = callback_threads() if threads == "auto" else threads
            with output, torch_threads(n):  # in a kernel, print() inside the callback shows in the panel
                try:  # caught inside `with`: Output.__exit__ would otherwise swallow it in a kernel
                    return fn(*args, **kwargs)
                except Exception as e:  # noqa: BLE001 (shown to the user, not swallowed)
                    wrapper.last_error = e
                    _append(output, "stderr", "".join(traceback.format_exception(type(e), e, e.__traceback__)))
                    return None

        wrapper.last_error = None
        return wrapper

    return decorate


def save_button(get_figure: Callable[[], object], stem: str, output: widgets.Output | None = None,
                formats: Sequence[str] = FORMATS, directory: str | Path | None = None,
                description: str = "Save figure") -> widgets.Button:
    """A button that saves `get_figure()` as `<directory>/<stem>.<fmt>` and lists the files in `output`.

    `directory` defaults to `figure_dir()` ($CLIPSPACE_FIGURE_DIR or ./figures next to the notebook),
    read at click time. Without `output` a new one is made: show `button.output` next to the button.
    Errors (and a skipped PNG/SVG when there is no Chrome) are reported in the output, not raised.
    """
    output = output if output is not None else error_output()
    button = widgets.Button(description=description, icon="download", tooltip=f"save {stem}.{{{','.join(formats)}}}")
    button.output = output

    @guarded(output)
    def on_click(_):
        button.disabled, button.description = True, "Saving…"
        try:
            import warnings

            path = Path(directory) / stem if directory is not None else figure_dir() / stem
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                paths = save_figure(get_figure(), path, formats=formats)
            for w in caught:
                _append(output, "stderr", f"{w.message}\n")
            _append(output, "stdout", "Saved " + ", ".join(str(p) for p in paths) + "\n")
            button.last_saved = paths
        finally:
            button.disabled, button.description = False, description

    button.last_saved = []
    button.on_click(on_click)
    button.on_click_handler = on_click  # exposes .last_error for tests and debugging
    return button


def figure_panel(figure: widgets.DOMWidget, controls: Iterable[widgets.Widget] = (),
                 output: widgets.Output | None = None, save: widgets.Button | None = None) -> widgets.VBox:
    """Lay out a panel: controls in a row on top, the figure, then the save button and the output."""
    rows = [widgets.HBox(list(controls))] if controls else []
    rows.append(figure)
    if save is not None:
        rows.append(save)
    if output is not None:
        rows.append(output)
    elif save is not None and getattr(save, "output", None) is not None:
        rows.append(save.output)
    return widgets.VBox(rows)


def put_figure(widget: FigureWidget | None, fig: go.Figure) -> FigureWidget:
    """`fig` shown in `widget`, in place (one batch update: the browser redraws once); a new
    `FigureWidget` of `fig` when there is no widget yet (its first message then holds the figure)."""
    if widget is None:
        return FigureWidget(fig)
    with widget.batch_update():
        widget.update(data=fig.data, layout=fig.layout, overwrite=True)
    return widget


class Panel:
    """What every notebook panel shares: `widget` (the whole panel, shown when the panel is a cell's
    value or passed to display()) and `sections` (view name -> that view's widgets, for panels whose
    views sit in separate notebook sections)."""

    widget: widgets.Widget
    sections: dict = {}

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)

    def section(self, view: str):
        """One view's widgets (figure, controls, output, save button), for a notebook section."""
        if view not in self.sections:
            raise ValueError(f"view={view!r}; use one of {', '.join(self.sections) or 'none (this panel has one view)'}")
        return self.sections[view]
