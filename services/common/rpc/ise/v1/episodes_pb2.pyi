from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AgentMessage(_message.Message):
    __slots__ = ("hello", "ready", "step", "reply")
    HELLO_FIELD_NUMBER: _ClassVar[int]
    READY_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    REPLY_FIELD_NUMBER: _ClassVar[int]
    hello: Hello
    ready: Ready
    step: Step
    reply: Reply
    def __init__(self, hello: _Optional[_Union[Hello, _Mapping]] = ..., ready: _Optional[_Union[Ready, _Mapping]] = ..., step: _Optional[_Union[Step, _Mapping]] = ..., reply: _Optional[_Union[Reply, _Mapping]] = ...) -> None: ...

class Hello(_message.Message):
    __slots__ = ("agent_name", "model", "tools_json", "resume_token")
    AGENT_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    TOOLS_JSON_FIELD_NUMBER: _ClassVar[int]
    RESUME_TOKEN_FIELD_NUMBER: _ClassVar[int]
    agent_name: str
    model: str
    tools_json: str
    resume_token: str
    def __init__(self, agent_name: _Optional[str] = ..., model: _Optional[str] = ..., tools_json: _Optional[str] = ..., resume_token: _Optional[str] = ...) -> None: ...

class Ready(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Usage(_message.Message):
    __slots__ = ("prompt_tokens", "completion_tokens", "llm_calls")
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    LLM_CALLS_FIELD_NUMBER: _ClassVar[int]
    prompt_tokens: int
    completion_tokens: int
    llm_calls: int
    def __init__(self, prompt_tokens: _Optional[int] = ..., completion_tokens: _Optional[int] = ..., llm_calls: _Optional[int] = ...) -> None: ...

class ToolCall(_message.Message):
    __slots__ = ("call_id", "name", "arguments_json")
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ARGUMENTS_JSON_FIELD_NUMBER: _ClassVar[int]
    call_id: str
    name: str
    arguments_json: str
    def __init__(self, call_id: _Optional[str] = ..., name: _Optional[str] = ..., arguments_json: _Optional[str] = ...) -> None: ...

class Step(_message.Message):
    __slots__ = ("episode_id", "content", "tool_calls", "usage")
    EPISODE_ID_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    TOOL_CALLS_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    episode_id: str
    content: str
    tool_calls: _containers.RepeatedCompositeFieldContainer[ToolCall]
    usage: Usage
    def __init__(self, episode_id: _Optional[str] = ..., content: _Optional[str] = ..., tool_calls: _Optional[_Iterable[_Union[ToolCall, _Mapping]]] = ..., usage: _Optional[_Union[Usage, _Mapping]] = ...) -> None: ...

class Reply(_message.Message):
    __slots__ = ("episode_id", "content", "usage")
    EPISODE_ID_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    episode_id: str
    content: str
    usage: Usage
    def __init__(self, episode_id: _Optional[str] = ..., content: _Optional[str] = ..., usage: _Optional[_Union[Usage, _Mapping]] = ...) -> None: ...

class ServerMessage(_message.Message):
    __slots__ = ("assigned", "user", "tool_result", "ended", "error")
    ASSIGNED_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    TOOL_RESULT_FIELD_NUMBER: _ClassVar[int]
    ENDED_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    assigned: EpisodeAssigned
    user: UserMessage
    tool_result: ToolResult
    ended: EpisodeEnded
    error: Error
    def __init__(self, assigned: _Optional[_Union[EpisodeAssigned, _Mapping]] = ..., user: _Optional[_Union[UserMessage, _Mapping]] = ..., tool_result: _Optional[_Union[ToolResult, _Mapping]] = ..., ended: _Optional[_Union[EpisodeEnded, _Mapping]] = ..., error: _Optional[_Union[Error, _Mapping]] = ...) -> None: ...

class EpisodeAssigned(_message.Message):
    __slots__ = ("episode_id", "lease_token", "system_prompt", "tools_json", "history_json", "run_id")
    EPISODE_ID_FIELD_NUMBER: _ClassVar[int]
    LEASE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    SYSTEM_PROMPT_FIELD_NUMBER: _ClassVar[int]
    TOOLS_JSON_FIELD_NUMBER: _ClassVar[int]
    HISTORY_JSON_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    episode_id: str
    lease_token: str
    system_prompt: str
    tools_json: str
    history_json: str
    run_id: str
    def __init__(self, episode_id: _Optional[str] = ..., lease_token: _Optional[str] = ..., system_prompt: _Optional[str] = ..., tools_json: _Optional[str] = ..., history_json: _Optional[str] = ..., run_id: _Optional[str] = ...) -> None: ...

class UserMessage(_message.Message):
    __slots__ = ("episode_id", "turn", "content", "partial_json")
    EPISODE_ID_FIELD_NUMBER: _ClassVar[int]
    TURN_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    PARTIAL_JSON_FIELD_NUMBER: _ClassVar[int]
    episode_id: str
    turn: int
    content: str
    partial_json: str
    def __init__(self, episode_id: _Optional[str] = ..., turn: _Optional[int] = ..., content: _Optional[str] = ..., partial_json: _Optional[str] = ...) -> None: ...

class ToolResult(_message.Message):
    __slots__ = ("call_id", "content", "exit_code", "is_error", "name")
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    IS_ERROR_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    call_id: str
    content: str
    exit_code: int
    is_error: bool
    name: str
    def __init__(self, call_id: _Optional[str] = ..., content: _Optional[str] = ..., exit_code: _Optional[int] = ..., is_error: _Optional[bool] = ..., name: _Optional[str] = ...) -> None: ...

class EpisodeEnded(_message.Message):
    __slots__ = ("episode_id", "verdict")
    EPISODE_ID_FIELD_NUMBER: _ClassVar[int]
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    episode_id: str
    verdict: str
    def __init__(self, episode_id: _Optional[str] = ..., verdict: _Optional[str] = ...) -> None: ...

class Error(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: str
    message: str
    def __init__(self, code: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...
