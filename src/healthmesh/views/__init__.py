"""SQL on FHIR v2 ViewDefinitions: flatten FHIR resources into rows.

>>> view = {"resource": "Patient", "select": [{"column": [{"name": "id", "path": "id"}]}]}
>>> evaluate(view, [{"resourceType": "Patient", "id": "p1"}])
[{'id': 'p1'}]

:func:`compile_view` compiles a ViewDefinition once (FHIRPath included) into Python
closures; :func:`evaluate` is the one-shot shortcut. An invalid ViewDefinition raises
:class:`ViewDefinitionError`; data a valid view cannot turn into rows (several values
for a non-collection column, a non-boolean ``where``) raises :class:`ViewEvaluationError`.
"""

from healthmesh.views.engine import CompiledView, compile_view, evaluate
from healthmesh.views.errors import ViewDefinitionError, ViewError, ViewEvaluationError

__all__ = [
    "CompiledView",
    "ViewDefinitionError",
    "ViewError",
    "ViewEvaluationError",
    "compile_view",
    "evaluate",
]
