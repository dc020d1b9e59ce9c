package episodes

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	isev1 "github.com/ise-trace/ise-trace/clients/go/gen/ise/v1"
)

const testToken = "test-token"

// fakeServer plays one scripted episode: two user turns, a step with two calls, then the end.
type fakeServer struct {
	isev1.UnimplementedEpisodesServer
	got []*isev1.AgentMessage
}

func (s *fakeServer) Drive(stream grpc.BidiStreamingServer[isev1.AgentMessage, isev1.ServerMessage]) error {
	md, _ := metadata.FromIncomingContext(stream.Context())
	if auth := md.Get("authorization"); len(auth) != 1 || auth[0] != "Bearer "+testToken {
		return status.Error(codes.Unauthenticated, "no or unknown token")
	}
	if err := stream.SendHeader(metadata.MD{}); err != nil {
		return err
	}
	recv := func() *isev1.AgentMessage {
		m, err := stream.Recv()
		if err != nil {
			return nil
		}
		s.got = append(s.got, m)
		return m
	}
	send := func(m *isev1.ServerMessage) { _ = stream.Send(m) }
	if recv().GetHello() == nil || recv().GetReady() == nil {
		return status.Error(codes.InvalidArgument, "hello then ready")
	}
	history := `[{"role": "system", "content": "be brief"}]`
	tools := `[{"type": "function", "function": {"name": "exec"}}]`
	send(&isev1.ServerMessage{Kind: &isev1.ServerMessage_Assigned{Assigned: &isev1.EpisodeAssigned{
		EpisodeId: "ep-1", LeaseToken: "lease-1", HistoryJson: history, ToolsJson: tools,
	}}})
	for turn := int32(0); turn < 2; turn++ {
		send(&isev1.ServerMessage{Kind: &isev1.ServerMessage_User{User: &isev1.UserMessage{
			EpisodeId: "ep-1", Turn: turn, Content: "do it",
		}}})
		for {
			m := recv()
			if m == nil {
				return nil
			}
			if step := m.GetStep(); step != nil {
				if step.GetEpisodeId() != "ep-1" {
					send(&isev1.ServerMessage{Kind: &isev1.ServerMessage_Error{Error: &isev1.Error{Code: "PERMISSION_DENIED"}}})
					continue
				}
				for _, call := range step.GetToolCalls() {
					send(&isev1.ServerMessage{Kind: &isev1.ServerMessage_ToolResult{ToolResult: &isev1.ToolResult{
						CallId: call.GetCallId(), Name: call.GetName(), Content: "ran " + call.GetArgumentsJson(),
					}}})
				}
				continue
			}
			break // the reply
		}
	}
	send(&isev1.ServerMessage{Kind: &isev1.ServerMessage_Ended{Ended: &isev1.EpisodeEnded{EpisodeId: "ep-1", Verdict: "success"}}})
	recv() // until the client goes
	return nil
}

func startFake(t *testing.T) (*fakeServer, grpc.DialOption) {
	t.Helper()
	lis := bufconn.Listen(1 << 20)
	srv := grpc.NewServer()
	fake := &fakeServer{}
	isev1.RegisterEpisodesServer(srv, fake)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	dialer := grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) })
	return fake, dialer
}

func TestRunEpisodeStepsRepliesAndRecords(t *testing.T) {
	fake, dialer := startFake(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c := New("passthrough:///bufnet", Options{
		Token: testToken, AgentName: "gotest", Model: "m", DialOptions: []grpc.DialOption{dialer, grpc.WithTransportCredentials(insecure.NewCredentials())},
	})
	if err := c.Connect(ctx, ""); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	calls := 0
	policy := func(_ context.Context, messages []Message, tools []json.RawMessage) (Assistant, error) {
		calls++
		if len(tools) != 1 {
			t.Errorf("tools: %v", tools)
		}
		if messages[len(messages)-1]["role"] == "user" { // first step of a turn: two calls
			return Assistant{ToolCalls: []ToolCall{
				{ID: "a", Name: "exec", Arguments: `{"cmd": "true"}`}, {ID: "b", Name: "read", Arguments: `{}`},
			}, Usage: &Usage{PromptTokens: 3, CompletionTokens: 2}}, nil
		}
		return Assistant{Content: "done"}, nil
	}
	result, err := c.RunEpisode(ctx, policy, false)
	if err != nil {
		t.Fatal(err)
	}
	if result.EpisodeID != "ep-1" || result.Verdict != "success" || result.Turns != 2 || calls != 4 {
		t.Fatalf("result %+v after %d policy calls", result, calls)
	}
	if c.EpisodeID != "" || c.LeaseToken != "" {
		t.Fatalf("lease kept after the end: %q %q", c.EpisodeID, c.LeaseToken)
	}
	roles := []string{}
	for _, m := range result.Messages {
		roles = append(roles, m["role"].(string))
	}
	want := "system user assistant tool tool assistant user assistant tool tool assistant"
	if got := strings.Join(roles, " "); got != want {
		t.Fatalf("roles %q, want %q", got, want)
	}
	if tool := result.Messages[3]; tool["tool_call_id"] != "a" || tool["name"] != "exec" || tool["content"] != `ran {"cmd": "true"}` {
		t.Fatalf("tool message %v", tool)
	}
	hello := fake.got[0].GetHello()
	if hello.GetAgentName() != "gotest" || hello.GetModel() != "m" || hello.GetResumeToken() != "" {
		t.Fatalf("hello %v", hello)
	}
	step := fake.got[2].GetStep()
	if step.GetEpisodeId() != "ep-1" || len(step.GetToolCalls()) != 2 || step.GetUsage().GetPromptTokens() != 3 || step.GetUsage().GetLlmCalls() != 1 {
		t.Fatalf("step %v", step)
	}
	if reply := fake.got[3].GetReply(); reply.GetContent() != "done" || reply.GetEpisodeId() != "ep-1" {
		t.Fatalf("reply %v", reply)
	}
}

func TestRefusalsAreErrorsWithStatusNames(t *testing.T) {
	_, dialer := startFake(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	opts := []grpc.DialOption{dialer, grpc.WithTransportCredentials(insecure.NewCredentials())}
	anon := New("passthrough:///bufnet", Options{AgentName: "anon", DialOptions: opts})
	err := anon.Connect(ctx, "")
	if err == nil {
		err = anon.Ready()
	}
	if err == nil {
		_, err = anon.RecvKind("assigned")
	}
	var refused *Error
	if !errors.As(err, &refused) || refused.Code != "UNAUTHENTICATED" {
		t.Fatalf("want UNAUTHENTICATED, got %v", err)
	}
	anon.Close()

	c := New("passthrough:///bufnet", Options{Token: testToken, AgentName: "x", DialOptions: opts})
	if err := c.Connect(ctx, ""); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Ready(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.RecvKind("assigned"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.RecvKind("user"); err != nil {
		t.Fatal(err)
	}
	c.EpisodeID = "ep-not-mine"
	_, err = c.Step(Assistant{ToolCalls: []ToolCall{{ID: "c", Name: "exec", Arguments: "{}"}}})
	if !errors.As(err, &refused) || refused.Code != "PERMISSION_DENIED" {
		t.Fatalf("want PERMISSION_DENIED, got %v", err)
	}
}

func TestCodeName(t *testing.T) {
	for code, want := range map[codes.Code]string{
		codes.PermissionDenied: "PERMISSION_DENIED", codes.Unavailable: "UNAVAILABLE",
		codes.ResourceExhausted: "RESOURCE_EXHAUSTED", codes.OK: "OK",
	} {
		if got := CodeName(code); got != want {
			t.Errorf("CodeName(%v) = %q, want %q", code, got, want)
		}
	}
}
