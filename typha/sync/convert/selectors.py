"""Selector handling for the converters: a light syntax check and the label rewriting that
libcalico-go's syncer does before Felix sees a selector (docs/model.md, "Policy" and "Rule").

We do not parse selectors into an AST here (the node client does that); we tokenize them, which
is enough to (a) reject obviously malformed text — unbalanced parentheses or braces, unterminated
strings, characters outside the grammar — and (b) rename label identifiers (``pcns.``/``pcsa.``
prefixes) and replace ``all()``/``global()`` without touching string literals. Rewritten text
keeps the user's spelling everywhere else, and rewritten parts are parenthesised before being
ANDed onto anything, so operator precedence never changes.
"""

from __future__ import annotations

from typha.sync.convert._common import (
    NAMESPACE_LABEL,
    NAMESPACE_LABEL_PREFIX,
    SERVICE_ACCOUNT_LABEL,
    SERVICE_ACCOUNT_LABEL_PREFIX,
)
from typha.sync.convert.errors import InvalidResource
from typha.sync.convert.selector_canon import canonical
from typha.sync.convert.selector_tokens import check_balance, tokenize

_FUNCTIONS = frozenset({"has", "all", "global"})

HAS_NAMESPACE = f"has({NAMESPACE_LABEL})"
NOT_HAS_NAMESPACE = f"!has({NAMESPACE_LABEL})"
HAS_SERVICE_ACCOUNT = f"has({SERVICE_ACCOUNT_LABEL})"


def check_selector(selector: str, field: str) -> str:
    """Light syntax check; returns the selector stripped of surrounding whitespace."""
    if not isinstance(selector, str):
        raise InvalidResource(
            f"expected a selector string, got {type(selector).__name__}", field=field
        )
    # A rewrite with nothing to change walks the same token checks (functions, has() shape).
    return rewrite_selector(selector, field)


def rewrite_selector(
    selector: str,
    field: str,
    *,
    prefix: str = "",
    all_replacement: str | None = None,
    global_replacement: str | None = None,
) -> str:
    """Prefix every label identifier with ``prefix`` and replace ``all()``/``global()``.

    A word is a label when it stands where an operand starts (start, after ``(``, ``&&``, ``||``,
    ``!``) and is not a function call, or when it is the argument of ``has(...)``. Words right
    after a label are operator words (``in``, ``not in``, ``contains``, ...) and stay as they are.
    """
    tokens = tokenize(selector, field)
    check_balance(selector, tokens, field)
    out: list[str] = []
    pos = 0
    operand = True  # the next word starts an operand
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        nxt = tokens[i + 1] if i + 1 < len(tokens) else None
        if tok.kind == "word" and operand and nxt is not None and nxt.kind == "(":
            if tok.text not in _FUNCTIONS:
                raise InvalidResource(
                    f"unknown function {tok.text!r} in selector {selector!r}", field=field
                )
            close = tokens[i + 3] if i + 3 < len(tokens) else None
            if tok.text == "has":
                arg = tokens[i + 2] if i + 2 < len(tokens) else None
                if arg is None or arg.kind != "word" or close is None or close.kind != ")":
                    raise InvalidResource(f"malformed has() in selector {selector!r}", field=field)
                out.append(selector[pos : arg.start])
                out.append(prefix + arg.text)
                pos = arg.end
                i += 4
            else:
                empty_call = i + 2 < len(tokens) and tokens[i + 2].kind == ")"
                if not empty_call:
                    raise InvalidResource(
                        f"{tok.text}() takes no arguments in selector {selector!r}", field=field
                    )
                replacement = all_replacement if tok.text == "all" else global_replacement
                if replacement is not None:
                    out.append(selector[pos : tok.start])
                    out.append(replacement)
                    pos = tokens[i + 2].end
                i += 3
            operand = False
            continue
        if tok.kind == "word" and operand:
            out.append(selector[pos : tok.start])
            out.append(prefix + tok.text)
            pos = tok.end
            operand = False
        elif tok.kind in ("(", "&&", "||", "!"):
            operand = True
        i += 1
    out.append(selector[pos:])
    return "".join(out).strip()


def and_all(*parts: str) -> str:
    """AND together non-empty selector parts, parenthesising each (``""`` if none)."""
    present = [p for p in parts if p]
    if len(present) == 1:
        return present[0]
    return " && ".join(f"({p})" for p in present)


# --- the syncer's rewrites ------------------------------------------------------------------------


def namespace_term(namespace: str) -> str:
    return f"{NAMESPACE_LABEL} == '{namespace}'"


def namespace_selector_term(namespace_selector: str, field: str) -> str:
    """A namespaceSelector as an endpoint selector, as libcalico-go builds it: parsed and
    printed with ``pcns.`` labels, then every ``all()`` → any namespaced endpoint and every
    ``global()`` → any non-namespaced endpoint (a plain text replacement, as Calico does)."""
    term = canonical(namespace_selector, field, prefix=NAMESPACE_LABEL_PREFIX)
    return term.replace("all()", HAS_NAMESPACE).replace("global()", NOT_HAS_NAMESPACE)


def service_account_selector_term(sa_selector: str, field: str) -> str:
    return canonical(sa_selector, field, prefix=SERVICE_ACCOUNT_LABEL_PREFIX)


def service_account_names_term(names: list[str]) -> str:
    quoted = ", ".join(f"'{n}'" for n in names)
    return canonical(f"{SERVICE_ACCOUNT_LABEL} in {{{quoted}}}", "serviceAccounts.names")


def policy_selector(
    selector: str,
    *,
    namespace: str,
    namespace_selector: str = "",
    service_account_selector: str = "",
    field: str = "spec",
) -> str:
    """The selector Felix sees for a policy, built as libcalico-go's policy processors do.

    * namespaced: ``(S) && projectcalico.org/namespace == '<ns>'`` (just the term when S is empty);
    * global with namespaceSelector N: ``(S) && <N printed with pcns. labels>``, then every
      ``all()`` in the whole text becomes ``has(projectcalico.org/namespace)``;
    * serviceAccountSelector X: ``(…) && <X printed with pcsa. labels>``; on global policies every
      ``all()`` then becomes ``has(projectcalico.org/serviceaccount)``.
    S itself is passed through as written; an empty result stays empty (Felix reads it as all()).
    """
    sel = check_selector(selector, f"{field}.selector")
    if namespace:
        ns_term = namespace_term(namespace)
        sel = f"({sel}) && {ns_term}" if sel else ns_term
    elif namespace_selector.strip():
        ns_part = canonical(
            namespace_selector, f"{field}.namespaceSelector", prefix=NAMESPACE_LABEL_PREFIX
        )
        sel = f"({sel}) && {ns_part}" if sel else ns_part
        sel = sel.replace("all()", HAS_NAMESPACE)
    if service_account_selector.strip():
        sa_part = service_account_selector_term(
            service_account_selector, f"{field}.serviceAccountSelector"
        )
        sel = f"({sel}) && {sa_part}" if sel else sa_part
        if not namespace:
            sel = sel.replace("all()", HAS_SERVICE_ACCOUNT)
    return sel


def entity_selector(
    *,
    selector: str,
    not_selector: str,
    namespace_selector: str,
    sa_names: list[str],
    sa_selector: str,
    policy_namespace: str,
    field: str,
) -> str:
    """The positive selector of a rule's source or destination (``GetEntityRuleSelector``).

    Namespace part: the pcns-rewritten namespaceSelector, else (namespaced policies) the policy's
    own namespace. Endpoint part: ``selector`` ANDed with the service-account match. The
    namespace part is only added when the entity selects endpoints at all (selector, notSelector,
    namespaceSelector or serviceAccounts set); a nets-only entity matches by CIDR everywhere.
    """
    if namespace_selector:
        ns_part = namespace_selector_term(namespace_selector, f"{field}.namespaceSelector")
    elif policy_namespace:
        ns_part = namespace_term(policy_namespace)
    else:
        ns_part = ""
    sa_parts = []
    if sa_selector:
        sa_parts.append(
            service_account_selector_term(sa_selector, f"{field}.serviceAccounts.selector")
        )
    if sa_names:
        sa_parts.append(service_account_names_term(sa_names))
    # Service accounts first, then the selector (libcalico-go's order).
    endpoint_part = and_all(and_all(*sa_parts), selector)
    selects_endpoints = bool(
        selector or not_selector or namespace_selector or sa_names or sa_selector
    )
    if ns_part and selects_endpoints:
        return f"({ns_part}) && ({endpoint_part})" if endpoint_part else ns_part
    return endpoint_part
