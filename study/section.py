"""The pydantic base of every config section (a task family's, the model's, training's,
a sweep's): an unknown key is an error and every assignment is validated."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)
