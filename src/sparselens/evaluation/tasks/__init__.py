"""Labelled text tasks for probing, built offline from text every machine has (or a user file).

See docs/evaluation.md ("Labelled tasks") for each task's source, size and class balance.
"""

from sparselens.evaluation.tasks.builtin import (
    BUILTIN_TASKS,
    build_task,
    builtin_tasks,
    topic_sentiment_task,
)
from sparselens.evaluation.tasks.task import LabelledTask, TaskSplit, load_labelled_file

__all__ = ["BUILTIN_TASKS", "LabelledTask", "TaskSplit", "build_task", "builtin_tasks",
           "load_labelled_file", "topic_sentiment_task"]
