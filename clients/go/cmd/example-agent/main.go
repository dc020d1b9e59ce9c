// Command example-agent bridges any OpenAI-compatible chat endpoint to ise.v1.Episodes (the Go
// twin of `python -m services.clients.example_agent`):
//
//	go run ./cmd/example-agent --target 127.0.0.1:50061 --token "$TOKEN" \
//	    --llm-base-url http://127.0.0.1:8765/v1 --llm-model default:agent --episodes 0
//
// Each LLM step is one chat completion with the episode's tools; its tool calls run for real in
// the episode's workspace. Prints one JSON line per finished episode. A broken stream is resumed
// with the episode's lease token. --episodes 0: serve until stopped.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/ise-trace/ise-trace/clients/go/episodes"
)

func env(name, fallback string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return fallback
}

type chatToolCall struct {
	ID       string `json:"id"`
	Type     string `json:"type"`
	Function struct {
		Name      string `json:"name"`
		Arguments string `json:"arguments"`
	} `json:"function"`
}

type chatResponse struct {
	Choices []struct {
		Message struct {
			Content   *string        `json:"content"`
			ToolCalls []chatToolCall `json:"tool_calls"`
		} `json:"message"`
	} `json:"choices"`
	Usage *struct {
		PromptTokens     int64 `json:"prompt_tokens"`
		CompletionTokens int64 `json:"completion_tokens"`
	} `json:"usage"`
}

// openAIPolicy is one LLM step: a chat completion with tools, as an assistant message (plus usage).
func openAIPolicy(client *http.Client, baseURL, apiKey, model string) episodes.Policy {
	url := strings.TrimRight(baseURL, "/") + "/chat/completions"
	return func(ctx context.Context, messages []episodes.Message, tools []json.RawMessage) (episodes.Assistant, error) {
		body, err := json.Marshal(map[string]any{"model": model, "messages": messages, "tools": tools})
		if err != nil {
			return episodes.Assistant{}, err
		}
		var raw []byte
		for attempt := 0; ; attempt++ { // up to 2 retries on transport errors, 429 and 5xx
			raw, err = post(ctx, client, url, apiKey, body)
			var retry retryable
			if err == nil || !errors.As(err, &retry) || attempt == 2 {
				break
			}
			time.Sleep(time.Duration(500<<attempt) * time.Millisecond)
		}
		if err != nil {
			return episodes.Assistant{}, err
		}
		var resp chatResponse
		if err := json.Unmarshal(raw, &resp); err != nil {
			return episodes.Assistant{}, fmt.Errorf("chat completion: %w", err)
		}
		if len(resp.Choices) == 0 {
			return episodes.Assistant{}, errors.New("chat completion without choices")
		}
		choice := resp.Choices[0].Message
		out := episodes.Assistant{}
		if choice.Content != nil {
			out.Content = *choice.Content
		}
		for _, c := range choice.ToolCalls {
			if c.Type == "" || c.Type == "function" {
				out.ToolCalls = append(out.ToolCalls, episodes.ToolCall{ID: c.ID, Name: c.Function.Name, Arguments: c.Function.Arguments})
			}
		}
		if resp.Usage != nil {
			out.Usage = &episodes.Usage{PromptTokens: resp.Usage.PromptTokens, CompletionTokens: resp.Usage.CompletionTokens}
		}
		return out, nil
	}
}

type retryable struct{ error }

func post(ctx context.Context, client *http.Client, url, apiKey string, body []byte) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	if apiKey == "" {
		apiKey = "none"
	}
	req.Header.Set("Authorization", "Bearer "+apiKey)
	resp, err := client.Do(req)
	if err != nil {
		return nil, retryable{err}
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, retryable{err}
	}
	if resp.StatusCode != http.StatusOK {
		err := fmt.Errorf("chat completion: HTTP %d: %.300s", resp.StatusCode, raw)
		if resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500 {
			return nil, retryable{err}
		}
		return nil, err
	}
	return raw, nil
}

func serve(ctx context.Context, c *episodes.Client, policy episodes.Policy, count int) error {
	if err := c.Connect(ctx, ""); err != nil {
		return err
	}
	defer c.Close()
	out := json.NewEncoder(os.Stdout)
	for done := 0; count <= 0 || done < count; done++ {
		resumed := false
		var result *episodes.EpisodeResult
		for {
			var err error
			result, err = c.RunEpisode(ctx, policy, resumed)
			if err == nil {
				break
			}
			var broken *episodes.Error
			if c.LeaseToken == "" || !errors.As(err, &broken) || broken.Code != "UNAVAILABLE" {
				return err
			}
			log.Printf("stream broke (%v); resuming %s", err, c.EpisodeID)
			time.Sleep(time.Second)
			if err := c.Connect(ctx, c.LeaseToken); err != nil {
				return err
			}
			resumed = true
		}
		line := map[string]any{"episode_id": result.EpisodeID, "verdict": result.Verdict, "turns": result.Turns}
		if err := out.Encode(line); err != nil {
			return err
		}
	}
	return nil
}

func main() {
	target := flag.String("target", env("ISE_AGENT_TARGET", "127.0.0.1:50061"), "the executor's gRPC address")
	token := flag.String("token", os.Getenv("ISE_AGENT_TOKEN"), "bearer token (or ISE_AGENT_TOKEN)")
	name := flag.String("name", "example-agent-go", "recorded as metadata.models.agent (with the model)")
	baseURL := flag.String("llm-base-url", env("OPENAI_BASE_URL", "http://127.0.0.1:8765/v1"), "OpenAI-compatible endpoint")
	model := flag.String("llm-model", "default:agent", "the model to ask")
	apiKey := flag.String("llm-api-key", os.Getenv("OPENAI_API_KEY"), "the endpoint's API key (or OPENAI_API_KEY)")
	count := flag.Int("episodes", 0, "episodes to play (0: until stopped)")
	flag.Parse()
	log.SetFlags(log.LstdFlags | log.Lmicroseconds)
	log.SetPrefix("example-agent-go: ")

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	policy := openAIPolicy(&http.Client{Timeout: 10 * time.Minute}, *baseURL, *apiKey, *model)
	client := episodes.New(*target, episodes.Options{Token: *token, AgentName: *name, Model: *model})
	if err := serve(ctx, client, policy, *count); err != nil {
		if ctx.Err() != nil {
			return // stopped
		}
		log.Fatal(err)
	}
}
