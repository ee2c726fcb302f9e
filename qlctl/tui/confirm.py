"""The confirmation screen every control key goes through: what will happen, who and why.

It shows the plan's lines (current state, caps, what changes), asks for a reason (required to
arm) and the operator (prefilled with the Unix user), and for a trade-executor disarm offers to
cancel the live answers too. Enter or the confirm button sends; Escape or Cancel sends nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Checkbox, Input, Label, Static

from qlctl.tui.plans import Plan, missing_input


@dataclass(frozen=True)
class Confirmation:
    operator: str
    reason: str
    cancel_live: bool = False


class ConfirmScreen(ModalScreen[Confirmation | None]):
    DEFAULT_CSS = """
    ConfirmScreen { align: center middle; }
    ConfirmScreen #dialog {
        width: 110; height: auto; max-height: 90%; padding: 1 2;
        border: thick $primary; background: $surface;
    }
    ConfirmScreen #dialog.danger { border: thick $error; }
    ConfirmScreen #title { text-style: bold; margin-bottom: 1; }
    ConfirmScreen #dialog.danger #title { color: $error; }
    ConfirmScreen #plan { margin-bottom: 1; }
    ConfirmScreen #problem { color: $error; height: auto; }
    ConfirmScreen #buttons { height: auto; margin-top: 1; }
    ConfirmScreen #buttons Button { margin-right: 2; }
    """
    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, plan: Plan, operator: str) -> None:
        super().__init__()
        self.plan = plan
        self.default_operator = operator

    def compose(self) -> ComposeResult:
        p = self.plan
        with Vertical(id="dialog", classes="danger" if p.danger else ""):
            yield Static(p.title, id="title", markup=False)
            yield Static("\n".join(p.lines), id="plan", markup=False)
            yield Label("Reason (required, audited)" if p.reason_required else "Reason (optional, audited)")
            yield Input(placeholder="why", id="reason")
            yield Label("Operator")
            yield Input(value=self.default_operator, id="operator")
            if p.offer_cancel_live:
                yield Checkbox("Also cancel the live answers (burn their nonces)", id="cancel-live")
            yield Static("", id="problem", markup=False)
            with Horizontal(id="buttons"):
                yield Button(
                    f"{p.action.capitalize()} {p.service}", id="confirm", variant="error" if p.danger else "primary"
                )
                yield Button("Cancel", id="cancel")

    def on_mount(self) -> None:
        self.query_one("#reason", Input).focus()

    @property
    def plan_text(self) -> str:
        """What the screen says will happen (also what the tests read)."""
        return "\n".join((self.plan.title, *self.plan.lines))

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "confirm":
            self.action_confirm()
        else:
            self.action_cancel()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.action_confirm()

    def action_confirm(self) -> None:
        operator = self.query_one("#operator", Input).value
        reason = self.query_one("#reason", Input).value
        problem = missing_input(self.plan, operator, reason)
        if problem is not None:
            self.query_one("#problem", Static).update(problem)
            self.query_one("#reason" if "reason" in problem else "#operator", Input).focus()
            return
        boxes = self.query("#cancel-live")
        cancel_live = bool(boxes) and self.query_one("#cancel-live", Checkbox).value
        self.dismiss(Confirmation(operator=operator.strip(), reason=reason.strip(), cancel_live=cancel_live))

    def action_cancel(self) -> None:
        self.dismiss(None)
