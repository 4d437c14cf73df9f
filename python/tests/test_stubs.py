"""The type stubs (pyhost/python/herald/__init__.pyi, shipped with py.typed)
against the module that runs: every name the stubs declare exists, ``__all__``
is the same, and every function, method and constructor they declare takes
the parameters the runtime's does (names and kinds). Overloads are checked
by name only."""

import ast
import inspect
import os

import herald

REPO_DIR = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STUB = os.path.join(REPO_DIR, "pyhost", "python", "herald", "__init__.pyi")


def _stub():
    with open(STUB) as file:
        return ast.parse(file.read())


def _stub_parameters(function):
    arguments = function.args
    kinds = [(p.arg, "POSITIONAL_ONLY") for p in arguments.posonlyargs]
    kinds += [(p.arg, "POSITIONAL_OR_KEYWORD") for p in arguments.args]
    if arguments.vararg:
        kinds.append((arguments.vararg.arg, "VAR_POSITIONAL"))
    kinds += [(p.arg, "KEYWORD_ONLY") for p in arguments.kwonlyargs]
    if arguments.kwarg:
        kinds.append((arguments.kwarg.arg, "VAR_KEYWORD"))
    return kinds


def _runtime_parameters(obj):
    return [(p.name, p.kind.name) for p in inspect.signature(obj).parameters.values()]


def _is_overload(function):
    return any(
        isinstance(decorator, ast.Name) and decorator.id == "overload"
        for decorator in function.decorator_list
    )


def _declared_all(tree):
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(target, ast.Name) and target.id == "__all__" for target in node.targets
        ):
            return sorted(ast.literal_eval(node.value))
    return None


def test_the_stubs_declare_the_modules_public_names():
    tree = _stub()
    assert _declared_all(tree) == sorted(herald.__all__)
    declared = {
        node.name
        for node in tree.body
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and not node.name.startswith("_")
    }
    assert declared == set(herald.__all__)


def test_the_stubs_signatures_are_the_runtimes():
    mismatches = []
    for node in _stub().body:
        if isinstance(node, ast.FunctionDef) and not _is_overload(node):
            stub, runtime = _stub_parameters(node), _runtime_parameters(getattr(herald, node.name))
            if stub != runtime:
                mismatches.append((node.name, stub, runtime))
        elif isinstance(node, ast.ClassDef):
            cls = getattr(herald, node.name)
            methods = {item.name: item for item in node.body if isinstance(item, ast.FunctionDef)}
            # A constructor the stub leaves out is the base class's: the runtime's
            # must then be that one too, or the stub lets programs call it wrongly.
            own_init = "__init__" in vars(cls)
            assert "__init__" in methods or not own_init, f"{node.name}.__init__ is not in the stub"
            for name, method in methods.items():
                stub = _stub_parameters(method)
                runtime = _runtime_parameters(getattr(cls, name))
                if stub != runtime:
                    mismatches.append((f"{node.name}.{name}", stub, runtime))
    assert mismatches == []


def test_the_stubs_attributes_exist_on_real_objects():
    error = herald.RegistrationError("register_global(f)", {1: "boom"}, [2], 3)
    assert (error.what, error.failures, error.unreachable, error.num_nodes) == (
        "register_global(f)",
        {1: "boom"},
        [2],
        3,
    )
    error = herald.GlobalImportError("m", {1: "no m"}, [], 2)
    assert (error.failures, error.unreachable, error.num_nodes, error.name) == (
        {1: "no m"},
        [],
        2,
        "m",
    )
    error = herald.TaskError("lost", 1, "unreachable")
    assert (error.node, error.kind, str(error)) == (1, "unreachable", "lost")
    assert herald.RemoteTraceback("tb").text == "tb"
    error = herald.RemoteError("Weird", "odd", 1, "tb")
    assert (error.type_name, error.message, error.node, error.remote_traceback) == (
        "Weird",
        "odd",
        1,
        "tb",
    )
    future = herald.launch(0, herald.node_id)
    assert future.node == 0 and future.result() == 0 and future.done() is True
