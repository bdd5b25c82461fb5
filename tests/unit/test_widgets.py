"""Widget plumbing: callbacks show their errors, the save button writes files and reports them."""
import ipywidgets as widgets
import plotly.graph_objects as go
import pytest

from clipspace import world
from clipspace.figures import FIGURE_DIR_ENV
from clipspace.notebook.widgets import error_output, figure_panel, guarded, save_button


def _text(output):
    return "".join(o.get("text", "") for o in output.outputs)


def test_guarded_shows_the_traceback_and_clears_it_on_the_next_good_call():
    out = error_output()
    calls = []

    @guarded(out)
    def on_change(x):
        calls.append(x)
        return 10 / x

    assert on_change(0) is None
    assert isinstance(on_change.last_error, ZeroDivisionError)
    text = _text(out)
    assert "Traceback" in text and "ZeroDivisionError" in text and "on_change" in text
    assert on_change(5) == 2.0 and on_change.last_error is None
    assert out.outputs == (), "a call that works clears the old error"
    assert calls == [0, 5]


def test_guarded_works_as_a_real_observer():
    out = error_output()
    slider = widgets.IntSlider(value=1, min=0, max=3)
    fig = go.FigureWidget(go.Bar(y=[1]))

    @guarded(out)
    def update(change):
        fig.data[0].y = [1] * (3 // change["new"])  # fails for 0

    slider.observe(update, names="value")
    slider.value = 3
    assert list(fig.data[0].y) == [1]
    slider.value = 0
    assert "ZeroDivisionError" in _text(out)
    slider.value = 1
    assert list(fig.data[0].y) == [1, 1, 1] and out.outputs == ()


def test_save_button_writes_into_the_directory_and_lists_the_files(tmp_path):
    img = world.single_objects(1)[0].render(32)
    button = save_button(lambda: img, "scene", directory=tmp_path, formats=("png", "html"))
    button.click()
    assert [p.name for p in button.last_saved] == ["scene.png", "scene.html"]
    assert all(p.exists() for p in button.last_saved)
    assert "Saved" in _text(button.output) and str(tmp_path / "scene.png") in _text(button.output)
    assert not button.disabled and button.description == "Save figure"


def test_save_button_defaults_to_the_figure_dir_env(tmp_path, monkeypatch):
    monkeypatch.setenv(FIGURE_DIR_ENV, str(tmp_path))
    out = error_output()
    button = save_button(lambda: world.single_objects(1)[0].render(32), "s", output=out, formats=["svg"])
    assert button.output is out
    button.click()
    assert (tmp_path / "s.svg").exists()


def test_save_button_reports_an_error_in_get_figure_and_stays_usable(tmp_path):
    state = {"fail": True}

    def get_figure():
        if state["fail"]:
            raise RuntimeError("no figure yet: move the slider first")
        return world.single_objects(1)[0].render(32)

    button = save_button(get_figure, "late", directory=tmp_path, formats=["png"])
    button.click()
    assert "no figure yet" in _text(button.output) and not (tmp_path / "late.png").exists()
    assert not button.disabled
    state["fail"] = False
    button.click()
    assert (tmp_path / "late.png").exists() and "no figure yet" not in _text(button.output)


def test_figure_panel_stacks_controls_figure_button_output(tmp_path):
    fig = go.FigureWidget()
    slider = widgets.IntSlider()
    out = error_output()
    button = save_button(lambda: fig, "f", output=out, directory=tmp_path)
    panel = figure_panel(fig, [slider], out, save=button)
    assert isinstance(panel, widgets.VBox)
    assert panel.children[0].children == (slider,) and panel.children[1:] == (fig, button, out)
    assert figure_panel(fig, save=button).children == (fig, button, out), "button.output is shown by default"


@pytest.mark.parametrize("bad", [None, "not a figure"])
def test_save_button_names_an_unsavable_figure(tmp_path, bad):
    button = save_button(lambda: bad, "x", directory=tmp_path)
    button.click()
    assert "cannot save" in _text(button.output)


def _comm_open_states(monkeypatch):
    """The state each new widget comm is opened with: what the browser's first message holds."""
    import comm

    opened = []
    real = comm.create_comm

    def recording(*args, **kwargs):
        opened.append(kwargs.get("data", {}).get("state", {}))
        return real(*args, **kwargs)

    monkeypatch.setattr(comm, "create_comm", recording)
    return opened


def test_figure_widget_opens_its_comm_with_the_figure(monkeypatch):
    from clipspace.notebook.widgets import FigureWidget

    opened = _comm_open_states(monkeypatch)
    plain = go.FigureWidget(go.Bar(y=[1, 2, 3]), layout=dict(title="t"))
    # plotly's own class opens the comm empty and sends the figure later: the race this class removes
    assert opened[-1]["_widget_data"] == [] and opened[-1]["_widget_layout"] == {}
    fig = FigureWidget(go.Bar(y=[1, 2, 3]), layout=dict(title="t"))
    state = opened[-1]
    assert [t["y"] for t in state["_widget_data"]] == [[1, 2, 3]]
    assert state["_widget_layout"]["title"] == {"text": "t"}
    assert isinstance(fig, go.FigureWidget) and fig.comm is not None and fig.model_id
    assert fig._repr_mimebundle_()["application/vnd.jupyter.widget-view+json"]["model_id"] == fig.model_id
    # and it updates in place like plotly's: a restyle after opening goes out as a message
    with fig.batch_update():
        fig.data[0].y = [3, 2, 1]
    assert list(fig.data[0].y) == [3, 2, 1] and plain.comm is not None


def test_guarded_callbacks_leave_a_core_to_the_front_end_and_restore_torch_threads(monkeypatch):
    import os

    import torch

    from clipspace.notebook.widgets import callback_threads

    before = torch.get_num_threads()
    torch.set_num_threads(4)
    try:
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2}, raising=False)
        assert callback_threads() == 2  # 3 cores: one left to the front end
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)
        assert callback_threads() == 1  # never zero
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
        assert callback_threads() == 4  # never more than torch was given
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
        seen = []
        out = error_output()

        @guarded(out)
        def cb(fail):
            seen.append(torch.get_num_threads())
            if fail:
                raise RuntimeError("boom")

        cb(False)
        cb(True)
        assert seen == [1, 1] and torch.get_num_threads() == 4  # restored after success and error

        @guarded(out, threads=None)
        def untouched():
            seen.append(torch.get_num_threads())

        untouched()
        assert seen[-1] == 4
    finally:
        torch.set_num_threads(before)
