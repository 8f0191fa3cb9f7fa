"""Tasks without a display: updates from worker threads, the core-callback adapters, and what
the main loop is told changed."""
from __future__ import annotations

import threading

from savatar.viewer.tasks import Task, TaskState, Tasks


def test_updates_from_many_threads_keep_every_field_consistent():
    task = Task("job", "Build", "starting")
    versions = []

    def work(k: int) -> None:
        for i in range(200):
            task.update(i / 199, f"worker {k}")
        versions.append(task.snapshot()[0])

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    version, state = task.snapshot()
    assert version == 800 and max(versions) == 800
    assert state.fraction == 1.0 and state.text.startswith("worker ") and state.running


def test_adapters_for_core_progress_callbacks():
    task = Task("build", "Build")
    task.on_stage(0.4, "fitting the head")
    assert task.state() == TaskState(0.4, "fitting the head", True)
    count = task.frame_counter("tracking clip.mp4")
    count(3, 12)
    assert task.state() == TaskState(0.25, "tracking clip.mp4: frame 3/12", True)
    count(5, 0)  # total unknown
    assert task.state() == TaskState(0.0, "tracking clip.mp4: frame 5/?", True)
    task.update(1.7)
    assert task.state().fraction == 1.0  # clamped to [0, 1]


def test_finish_and_cancel():
    task = Task("build", "Build")
    assert not task.cancelled
    threading.Thread(target=task.cancel).start()
    assert task.cancel_event.wait(5) and task.cancelled
    task.finish("cancelled", 0.0)
    assert task.state() == TaskState(0.0, "cancelled", False) and not task.running


def test_the_main_loop_hears_of_each_change_once_and_of_the_newest_task_per_panel():
    tasks = Tasks()
    assert tasks.changed() == []
    build = tasks.start("build", "Build", "starting")
    opening = tasks.start("open", "Avatar", "loading a.h5 ...")
    assert sorted(tasks.changed()) == [("Avatar", TaskState(0.0, "loading a.h5 ...")), ("Build", TaskState(0.0, "starting"))]
    assert tasks.changed() == []
    build.update(0.5, "half")
    assert tasks.changed() == [("Build", TaskState(0.5, "half"))]
    tasks.start("save", "Avatar", "saving a.h5 ...")
    opening.finish("")  # replaced in its panel: no longer shown
    assert tasks.changed() == [("Avatar", TaskState(0.0, "saving a.h5 ..."))]
