"""Which errors the tests raise or observe, read from their source with :mod:`ast`.

A test observes an error when it

* expects it: ``pytest.raises(NotCTError)``, or a tuple that holds it;
* compares something with its code: ``body["code"] == "upload.empty"``,
  ``"error[input.no_dicom]" in out``, ``line.startswith("error[input.no_dicom]")``,
  ``codes == [IntendedBodyPartError.code]``;
* or hands the code or the class as a value to something that does: an argument of a helper
  whose parameter is compared (``refused(response, 422, "upload.empty")``), a ``parametrize``
  value, a loop over a table or a local name that reaches such a comparison.

Nothing else is evidence: not a comment or a docstring, nor a string the test sends, prints or
builds an input from. Helpers are matched by name across the test tree, so a helper defined in a
conftest or a shared module counts where a test calls it.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

__all__ = ["Evidence", "observed_errors"]

#: A code-shaped token: ``error[dicom.not_ct]: …`` holds ``dicom.not_ct``.
_CODE = re.compile(r"(?<![\w.])[a-z][a-z0-9_]*(?:\.[a-z0-9_]+)+(?![\w.])")
#: Calls whose result is compared as the values they are given.
_PASS_THROUGH = frozenset({"sorted", "set", "frozenset", "list", "tuple"})
_FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef)

Scope = ast.Module | ast.FunctionDef | ast.AsyncFunctionDef


@dataclass
class Evidence:
    """Codes compared and error class names raised or compared somewhere in the tests."""

    codes: set[str] = field(default_factory=set)
    classes: set[str] = field(default_factory=set)


def observed_errors(sources: Iterable[str], class_names: set[str]) -> Evidence:
    """The codes and the classes (of ``class_names``) that the test modules ``sources`` raise
    or observe."""
    return _Corpus([ast.parse(source) for source in sources], class_names).evidence()


def _name_of(func: ast.expr) -> str:
    """``f`` for ``f(…)`` and ``obj.f(…)``."""
    if isinstance(func, ast.Name):
        return func.id
    return func.attr if isinstance(func, ast.Attribute) else ""


def _body_nodes(scope: ast.AST) -> Iterator[ast.AST]:
    """The nodes of ``scope`` outside the functions defined in it."""
    pending = list(ast.iter_child_nodes(scope))
    while pending:
        node = pending.pop()
        yield node
        if not isinstance(node, _FUNCTIONS):
            pending.extend(ast.iter_child_nodes(node))


def _compared(expr: ast.expr) -> Iterator[ast.expr]:
    """The values ``expr`` stands for when it is compared: itself, or what a literal container,
    a concatenation or a ``sorted(…)``-like call holds."""
    if isinstance(expr, ast.Tuple | ast.List | ast.Set):
        for element in expr.elts:
            yield from _compared(element.value if isinstance(element, ast.Starred) else element)
    elif isinstance(expr, ast.Dict):
        for part in [*expr.keys, *expr.values]:
            if part is not None:
                yield from _compared(part)
    elif isinstance(expr, ast.BinOp):
        yield from _compared(expr.left)
        yield from _compared(expr.right)
    elif isinstance(expr, ast.IfExp):
        yield from _compared(expr.body)
        yield from _compared(expr.orelse)
    elif isinstance(expr, ast.Call) and _name_of(expr.func) in _PASS_THROUGH:
        for arg in expr.args:
            yield from _compared(arg)
    elif isinstance(expr, ast.Constant | ast.Name | ast.Attribute | ast.JoinedStr):
        yield expr


def _params(func: ast.FunctionDef | ast.AsyncFunctionDef) -> list[str]:
    """The parameters a caller fills by position (``self`` and ``cls`` left out)."""
    names = [arg.arg for arg in [*func.args.posonlyargs, *func.args.args]]
    return names[1:] if names[:1] in (["self"], ["cls"]) else names


def _parametrize_tables(
    func: ast.FunctionDef | ast.AsyncFunctionDef, name: str
) -> Iterator[tuple[ast.expr, int | None]]:
    """The argument values of each ``@pytest.mark.parametrize`` of ``func`` that fills the
    parameter ``name``, with ``name``'s column (None: the values are single)."""
    for decorator in func.decorator_list:
        if not (isinstance(decorator, ast.Call) and _name_of(decorator.func) == "parametrize"):
            continue
        given = dict(zip(("argnames", "argvalues"), decorator.args, strict=False))
        given |= {kw.arg: kw.value for kw in decorator.keywords if kw.arg}
        names_node, values = given.get("argnames"), given.get("argvalues")
        if isinstance(names_node, ast.Constant) and isinstance(names_node.value, str):
            names = [part.strip() for part in names_node.value.split(",")]
        elif isinstance(names_node, ast.Tuple | ast.List):
            names = [e.value for e in names_node.elts if isinstance(e, ast.Constant)]
        else:
            continue
        if name in names and values is not None:
            yield values, names.index(name) if len(names) > 1 else None


def _column(rows: ast.expr, index: int | None) -> Iterator[ast.expr]:
    """The ``index``-th item of each row of a literal table (each row whole when None);
    ``pytest.param(…)`` rows are unwrapped."""
    if not isinstance(rows, ast.Tuple | ast.List | ast.Set):
        return
    for row in rows.elts:
        items = row.args if isinstance(row, ast.Call) and _name_of(row.func) == "param" else None
        if index is None:
            yield items[0] if items else row
        elif items is not None and index < len(items):
            yield items[index]
        elif isinstance(row, ast.Tuple | ast.List) and index < len(row.elts):
            yield row.elts[index]


class _Corpus:
    """The parsed test modules, each module and function a scope, and what they observe."""

    def __init__(self, modules: list[ast.Module], class_names: set[str]) -> None:
        self.class_names = class_names
        self.found = Evidence()
        #: helper name -> the positions and keyword names of its compared parameters.
        self.compared_params: dict[str, set[int | str]] = {}
        #: every function -> the function or module it is defined in.
        self.parent: dict[Scope, Scope] = {}
        pending: list[Scope] = list(modules)
        while pending:
            scope = pending.pop()
            for node in _body_nodes(scope):
                if isinstance(node, _FUNCTIONS):
                    self.parent[node] = scope
                    pending.append(node)
        self.scopes: list[Scope] = [*modules, *self.parent]
        #: (scope, name) pairs already followed in this pass.
        self._resolved: set[tuple[int, str]] = set()

    def evidence(self) -> Evidence:
        """Walk every scope until no new helper parameter turns out to be compared."""
        while True:
            before = sum(map(len, self.compared_params.values()))
            self._resolved.clear()
            for scope in self.scopes:
                self._walk(scope)
            if sum(map(len, self.compared_params.values())) == before:
                return self.found

    def _walk(self, scope: Scope) -> None:
        for node in _body_nodes(scope):
            if isinstance(node, ast.Compare):
                for operand in [node.left, *node.comparators]:
                    self._observe_all(_compared(operand), scope)
            elif isinstance(node, ast.Call):
                self._call(node, scope)

    def _call(self, call: ast.Call, scope: Scope) -> None:
        name = _name_of(call.func)
        if name in ("startswith", "endswith"):
            for arg in call.args:
                self._observe_all(_compared(arg), scope)
        elif name == "raises" and call.args:
            self._observe_all(_compared(call.args[0]), scope)
        elif name in self.compared_params:
            compared = self.compared_params[name]
            for index, arg in enumerate(call.args):
                if index in compared:
                    self._observe_all(_compared(arg), scope)
            for keyword in call.keywords:
                if keyword.arg in compared:
                    self._observe_all(_compared(keyword.value), scope)

    def _observe_all(self, values: Iterable[ast.expr], scope: Scope) -> None:
        for value in values:
            self._observe(value, scope)

    def _observe(self, value: ast.expr, scope: Scope) -> None:
        """Record what a compared (or raised) value shows: codes in its text, an error class,
        or, for a name, whatever reaches that name."""
        if isinstance(value, ast.Constant) and isinstance(value.value, str):
            self.found.codes.update(_CODE.findall(value.value))
        elif isinstance(value, ast.JoinedStr):
            for part in value.values:
                if isinstance(part, ast.FormattedValue):
                    self._observe_all(_compared(part.value), scope)
                else:
                    self._observe(part, scope)
        elif isinstance(value, ast.Attribute):
            if value.attr == "code":  # ``NotCTError.code``, ``error.code``
                self._observe_all(_compared(value.value), scope)
            elif value.attr in self.class_names:  # ``errors.NotCTError``
                self.found.classes.add(value.attr)
        elif isinstance(value, ast.Name):
            if value.id in self.class_names:
                self.found.classes.add(value.id)
            else:
                self._resolve(value.id, scope)

    def _resolve(self, name: str, scope: Scope) -> None:
        """Observe what reaches ``name`` in ``scope``: a parameter (its ``parametrize`` values,
        and the arguments helpers' callers give it), an assignment or a loop over a table."""
        key = (id(scope), name)
        if key in self._resolved:
            return
        self._resolved.add(key)
        if isinstance(scope, ast.FunctionDef | ast.AsyncFunctionDef):
            params = _params(scope)
            keyword_only = [arg.arg for arg in scope.args.kwonlyargs]
            if name in params or name in keyword_only:
                compared = self.compared_params.setdefault(scope.name, set())
                compared.add(name)
                if name in params:
                    compared.add(params.index(name))
                for table, column in _parametrize_tables(scope, name):
                    rows = self._literal(table, self.parent[scope])
                    if rows is not None:
                        self._observe_all(_column(rows, column), self.parent[scope])
                return
        if self._assigned(name, scope):
            return
        outer = self.parent.get(scope)
        if outer is not None:
            self._resolve(name, outer)

    def _assigned(self, name: str, scope: Scope) -> bool:
        """Observe the values ``scope`` binds to ``name``; False when it binds none."""
        bound = False
        for node in _body_nodes(scope):
            if isinstance(node, ast.Assign | ast.AnnAssign) and node.value is not None:
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                if any(isinstance(t, ast.Name) and t.id == name for t in targets):
                    bound = True
                    self._observe_all(_compared(node.value), scope)
            elif isinstance(node, ast.For | ast.AsyncFor | ast.comprehension):
                for index in _positions(node.target, name):
                    bound = True
                    self._observe_all(self._iterated(node.iter, index, scope), scope)
        return bound

    def _iterated(self, source: ast.expr, index: int | None, scope: Scope) -> Iterator[ast.expr]:
        """The values a loop over ``source`` binds to its target's ``index``-th name: the rows
        of a literal table, the keys or values of a literal dict (``.items()``, ``.keys()``,
        ``.values()``), looked up through a name bound in ``scope`` or around it."""
        method = None
        if isinstance(source, ast.Call) and isinstance(source.func, ast.Attribute):
            method, source = source.func.attr, source.func.value
        table = self._literal(source, scope)
        if isinstance(table, ast.Dict):
            keys = [key for key in table.keys if key is not None]
            columns = {"items": [keys, table.values], "values": [table.values]}
            chosen = columns.get(method or "", [keys])
            position = 0 if index is None or method != "items" else index
            if position < len(chosen):
                yield from chosen[position]
        elif method is None and table is not None:
            yield from _column(table, index)

    def _literal(self, expr: ast.expr, scope: Scope) -> ast.expr | None:
        """``expr`` when it is a literal table, or the literal a name is bound to."""
        if isinstance(expr, ast.Dict | ast.List | ast.Tuple | ast.Set):
            return expr
        if not isinstance(expr, ast.Name):
            return None
        current: Scope | None = scope
        while current is not None:
            for node in _body_nodes(current):
                if (
                    isinstance(node, ast.Assign)
                    and any(isinstance(t, ast.Name) and t.id == expr.id for t in node.targets)
                    and isinstance(node.value, ast.Dict | ast.List | ast.Tuple | ast.Set)
                ):
                    return node.value
            current = self.parent.get(current)
        return None


def _positions(target: ast.expr, name: str) -> Iterator[int | None]:
    """Where a loop target binds ``name``: None for the target itself, else its position in a
    tuple target; nothing when it does not bind it."""
    if isinstance(target, ast.Name) and target.id == name:
        yield None
    elif isinstance(target, ast.Tuple | ast.List):
        for index, element in enumerate(target.elts):
            if isinstance(element, ast.Name) and element.id == name:
                yield index
