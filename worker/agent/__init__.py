"""The agent: a tool-calling loop in a sandbox (worker/agent/loop.py), its tools (tools.py) and
its context window (context.py, the training split's rules). See docs/sandboxes-and-agent.md."""

from __future__ import annotations

from worker.agent.loop import END_STATES, AgentConfig, AgentResult, AgentTask, AgentTurn, run_agent
from worker.agent.tools import TOOL_NAMES, TOOL_SPECS, calls_from_text

__all__ = [
    "END_STATES", "TOOL_NAMES", "TOOL_SPECS", "AgentConfig", "AgentResult", "AgentTask", "AgentTurn",
    "calls_from_text", "run_agent",
]
