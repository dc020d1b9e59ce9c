// Package episodes is a thin Go client of ise.v1.Episodes: play the agent role of ISE-Trace episodes.
//
//	c := episodes.New("127.0.0.1:50061", episodes.Options{Token: token, AgentName: "my-agent", Model: "m"})
//	if err := c.Connect(ctx, ""); err != nil { ... }
//	defer c.Close()
//	for {
//		result, err := c.RunEpisode(ctx, policy, false)
//		...
//	}
//
// A Policy is one LLM step: it gets the OpenAI messages so far and the tools schemas and returns
// an assistant message; its tool calls run for real in the episode's workspace (one Step, one
// ToolResult per call) and their results are appended; a message without tool calls is the Reply
// to the user. After a broken stream (an *Error with code UNAVAILABLE while LeaseToken is set),
// Connect(ctx, c.LeaseToken) and RunEpisode(ctx, policy, true) continue the same episode within
// the server's grace period. The lower-level Ready, Step, Reply, Recv and RecvKind are exported too.
package episodes

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	isev1 "github.com/ise-trace/ise-trace/clients/go/gen/ise/v1"
)

// MaxMessageBytes is the largest message sent or received (as the Python client).
const MaxMessageBytes = 16 << 20

// Message is one OpenAI chat message as decoded JSON ({"role": ..., "content": ...}).
type Message = map[string]any

// ToolCall is one call of an assistant message (OpenAI `tool_calls[i]`).
type ToolCall struct {
	ID        string // the call's id, unique within the episode
	Name      string // function.name
	Arguments string // function.arguments, the JSON string exactly as the model produced it
}

// Usage is what the LLM call behind a message cost (optional).
type Usage struct {
	PromptTokens     int64
	CompletionTokens int64
}

// Assistant is what a Policy returns: tool calls (a Step) or none (the Reply, with Content).
type Assistant struct {
	Content   string
	ToolCalls []ToolCall
	Usage     *Usage
}

// Policy is one LLM step over the conversation so far and the tools (an OpenAI `tools` array).
type Policy func(ctx context.Context, messages []Message, tools []json.RawMessage) (Assistant, error)

// Error is a refused message (an Error message of the server; the stream goes on) or the end of
// the stream with its gRPC status (code as a status name: UNAUTHENTICATED, NOT_FOUND, UNAVAILABLE, ...).
type Error struct {
	Code    string
	Message string
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

// EpisodeResult is one played episode.
type EpisodeResult struct {
	EpisodeID string
	Verdict   string
	Turns     int
	Messages  []Message
}

// Options configure a Client.
type Options struct {
	Token       string            // bearer token (sent as `authorization: Bearer <token>`)
	AgentName   string            // recorded as metadata.models.agent (with Model)
	Model       string            // the model behind the agent (optional)
	Tools       []json.RawMessage // the tool schemas declared; nil: exactly the executor's tools
	DialOptions []grpc.DialOption // extra options (e.g. a custom dialer)
}

// Client is one agent connection (one Drive stream); episodes are played one at a time.
type Client struct {
	Target     string
	Options    Options
	EpisodeID  string // the episode held now ("" between episodes)
	LeaseToken string // its lease, also the resume token after a broken stream

	conn   *grpc.ClientConn
	stream grpc.BidiStreamingClient[isev1.AgentMessage, isev1.ServerMessage]
	cancel context.CancelFunc
}

// New returns a Client of target (host:port); Connect opens its stream.
func New(target string, opts Options) *Client {
	return &Client{Target: target, Options: opts}
}

// Connect opens the stream and says Hello (with resumeToken: takes back that episode).
func (c *Client) Connect(ctx context.Context, resumeToken string) error {
	c.Close()
	dial := append([]grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(MaxMessageBytes), grpc.MaxCallSendMsgSize(MaxMessageBytes)),
	}, c.Options.DialOptions...)
	conn, err := grpc.NewClient(c.Target, dial...)
	if err != nil {
		return err
	}
	streamCtx, cancel := context.WithCancel(ctx)
	if c.Options.Token != "" {
		streamCtx = metadata.AppendToOutgoingContext(streamCtx, "authorization", "Bearer "+c.Options.Token)
	}
	stream, err := isev1.NewEpisodesClient(conn).Drive(streamCtx, grpc.WaitForReady(true))
	if err != nil {
		cancel()
		conn.Close()
		return statusError(err)
	}
	c.conn, c.stream, c.cancel = conn, stream, cancel
	// accepted (the server sends its headers at once) or refused with its status before anything
	// is written, so a refusal (UNAUTHENTICATED) is never masked by a failed write
	if _, err := stream.Header(); err != nil {
		return c.ended(err)
	}
	tools := ""
	if len(c.Options.Tools) > 0 {
		raw, err := json.Marshal(c.Options.Tools)
		if err != nil {
			return err
		}
		tools = string(raw)
	}
	hello := &isev1.Hello{AgentName: c.Options.AgentName, Model: c.Options.Model, ToolsJson: tools, ResumeToken: resumeToken}
	return c.Send(&isev1.AgentMessage{Kind: &isev1.AgentMessage_Hello{Hello: hello}})
}

// Close ends the stream (an episode held stays resumable for the grace period).
func (c *Client) Close() {
	if c.cancel != nil {
		c.cancel()
		c.cancel = nil
	}
	if c.conn != nil {
		c.conn.Close()
		c.conn = nil
	}
	c.stream = nil
}

// Send sends a message; an *Error with the stream's status when the stream already ended.
func (c *Client) Send(m *isev1.AgentMessage) error {
	if c.stream == nil {
		return &Error{Code: "FAILED_PRECONDITION", Message: "not connected"}
	}
	if err := c.stream.Send(m); err != nil {
		if errors.Is(err, io.EOF) { // the real status comes with the next read
			_, err = c.stream.Recv()
		}
		return c.ended(err)
	}
	return nil
}

// Recv returns the next server message; an *Error when the stream ended (with its status).
func (c *Client) Recv() (*isev1.ServerMessage, error) {
	if c.stream == nil {
		return nil, &Error{Code: "FAILED_PRECONDITION", Message: "not connected"}
	}
	m, err := c.stream.Recv()
	if err != nil {
		return nil, c.ended(err)
	}
	return m, nil
}

func (c *Client) ended(err error) error {
	if err == nil || errors.Is(err, io.EOF) {
		return &Error{Code: "EOF", Message: "stream ended"}
	}
	return statusError(err)
}

func statusError(err error) error {
	s, ok := status.FromError(err)
	if !ok {
		return err
	}
	return &Error{Code: CodeName(s.Code()), Message: s.Message()}
}

// CodeName is a gRPC code as its status name (codes.PermissionDenied -> "PERMISSION_DENIED").
func CodeName(code codes.Code) string {
	if code == codes.OK {
		return "OK"
	}
	var b strings.Builder
	for i, r := range code.String() {
		if unicode.IsUpper(r) && i > 0 {
			b.WriteByte('_')
		}
		b.WriteRune(unicode.ToUpper(r))
	}
	return b.String()
}

// Kind names a server message's kind as in the proto: assigned, user, tool_result, ended, error.
func Kind(m *isev1.ServerMessage) string {
	switch m.GetKind().(type) {
	case *isev1.ServerMessage_Assigned:
		return "assigned"
	case *isev1.ServerMessage_User:
		return "user"
	case *isev1.ServerMessage_ToolResult:
		return "tool_result"
	case *isev1.ServerMessage_Ended:
		return "ended"
	case *isev1.ServerMessage_Error:
		return "error"
	}
	return "unset"
}

// RecvKind returns the next message, which must be one of kinds (an Error message is an *Error).
func (c *Client) RecvKind(kinds ...string) (*isev1.ServerMessage, error) {
	m, err := c.Recv()
	if err != nil {
		return nil, err
	}
	kind := Kind(m)
	if kind == "error" {
		return nil, &Error{Code: m.GetError().GetCode(), Message: m.GetError().GetMessage()}
	}
	for _, k := range kinds {
		if k == kind {
			return m, nil
		}
	}
	return nil, &Error{Code: "UNEXPECTED", Message: fmt.Sprintf("expected %s, got %s", strings.Join(kinds, " or "), kind)}
}

// Ready asks for the next episode.
func (c *Client) Ready() error {
	return c.Send(&isev1.AgentMessage{Kind: &isev1.AgentMessage_Ready{Ready: &isev1.Ready{}}})
}

func usage(u *Usage) *isev1.Usage {
	out := &isev1.Usage{LlmCalls: 1}
	if u != nil {
		out.PromptTokens, out.CompletionTokens = u.PromptTokens, u.CompletionTokens
	}
	return out
}

// Step sends an assistant message with tool calls for the held episode; its tool results, in order.
func (c *Client) Step(a Assistant) ([]*isev1.ToolResult, error) {
	calls := make([]*isev1.ToolCall, len(a.ToolCalls))
	for i, tc := range a.ToolCalls {
		calls[i] = &isev1.ToolCall{CallId: tc.ID, Name: tc.Name, ArgumentsJson: tc.Arguments}
	}
	step := &isev1.Step{EpisodeId: c.EpisodeID, Content: a.Content, ToolCalls: calls, Usage: usage(a.Usage)}
	if err := c.Send(&isev1.AgentMessage{Kind: &isev1.AgentMessage_Step{Step: step}}); err != nil {
		return nil, err
	}
	results := make([]*isev1.ToolResult, 0, len(calls))
	for range calls {
		m, err := c.RecvKind("tool_result")
		if err != nil {
			return nil, err
		}
		results = append(results, m.GetToolResult())
	}
	return results, nil
}

// Reply sends the final answer to the current user message of the held episode.
func (c *Client) Reply(content string, u *Usage) error {
	reply := &isev1.Reply{EpisodeId: c.EpisodeID, Content: content, Usage: usage(u)}
	return c.Send(&isev1.AgentMessage{Kind: &isev1.AgentMessage_Reply{Reply: reply}})
}

// RunEpisode plays one episode to its end with policy (after Ready, or the resumed one).
func (c *Client) RunEpisode(ctx context.Context, policy Policy, resumed bool) (*EpisodeResult, error) {
	if !resumed {
		if err := c.Ready(); err != nil {
			return nil, err
		}
	}
	m, err := c.RecvKind("assigned")
	if err != nil {
		return nil, err
	}
	assigned := m.GetAssigned()
	c.EpisodeID, c.LeaseToken = assigned.GetEpisodeId(), assigned.GetLeaseToken()
	tools := c.Options.Tools
	if len(tools) == 0 {
		if err := json.Unmarshal([]byte(assigned.GetToolsJson()), &tools); err != nil {
			return nil, fmt.Errorf("tools_json: %w", err)
		}
	}
	result := &EpisodeResult{EpisodeID: c.EpisodeID}
	if err := json.Unmarshal([]byte(assigned.GetHistoryJson()), &result.Messages); err != nil {
		return nil, fmt.Errorf("history_json: %w", err)
	}
	for {
		m, err := c.RecvKind("user", "ended")
		if err != nil {
			return nil, err
		}
		if ended := m.GetEnded(); ended != nil {
			result.Verdict = ended.GetVerdict()
			c.EpisodeID, c.LeaseToken = "", ""
			return result, nil
		}
		result.Turns++
		user := m.GetUser()
		result.Messages = append(result.Messages, Message{"role": "user", "content": user.GetContent()})
		if partial := user.GetPartialJson(); partial != "" {
			var earlier []Message
			if err := json.Unmarshal([]byte(partial), &earlier); err != nil {
				return nil, fmt.Errorf("partial_json: %w", err)
			}
			result.Messages = append(result.Messages, earlier...)
		}
		if result.Messages, err = c.answer(ctx, policy, result.Messages, tools); err != nil {
			return nil, err
		}
	}
}

// answer runs the policy until it replies: each tool-calling step is executed and recorded.
func (c *Client) answer(ctx context.Context, policy Policy, messages []Message, tools []json.RawMessage) ([]Message, error) {
	for {
		out, err := policy(ctx, messages, tools)
		if err != nil {
			return messages, err
		}
		if len(out.ToolCalls) == 0 {
			messages = append(messages, Message{"role": "assistant", "content": out.Content})
			return messages, c.Reply(out.Content, out.Usage)
		}
		calls := make([]any, len(out.ToolCalls))
		for i, tc := range out.ToolCalls {
			calls[i] = map[string]any{
				"id": tc.ID, "type": "function", "function": map[string]any{"name": tc.Name, "arguments": tc.Arguments},
			}
		}
		var content any
		if out.Content != "" {
			content = out.Content
		}
		messages = append(messages, Message{"role": "assistant", "content": content, "tool_calls": calls})
		results, err := c.Step(out)
		if err != nil {
			return messages, err
		}
		for _, r := range results {
			messages = append(messages, Message{
				"role": "tool", "tool_call_id": r.GetCallId(), "name": r.GetName(), "content": r.GetContent(),
			})
		}
	}
}
