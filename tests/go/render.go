// render prints what Ollama makes of a Modelfile TEMPLATE, using Go's own text/template.
//
//	go run render.go [-execute] TEMPLATE_FILE VALUES_JSON_FILE
//
// VALUES_JSON_FILE holds {"System": ..., "Prompt": ..., "Response": ..., "Messages": [{"role", "content"}]}.
//
// Default mode: the text Ollama sends the model for a conversation. The conversation is "Messages",
// or, without it, the one Ollama builds from a request: a system message (when System is not empty),
// the user's Prompt and, when Response is not empty, an assistant message. Ollama renders a template
// without .Messages once per finished exchange with System/Prompt/Response, and for the last one
// renders the template only up to its {{ .Response }} action, so the model continues from there
// (ollama/ollama, template/template.go, Template.Execute). A template that uses .Messages is executed
// once with the whole conversation instead.
//
// -execute: one plain execution of the template with System, Prompt and Response, which is how a
// finished exchange of a conversation is rendered.
//
// Standard library only: it builds offline with a bare Go toolchain.
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strings"
	"text/template"
	"text/template/parse"
)

type message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

type values struct {
	System   string     `json:"System"`
	Prompt   string     `json:"Prompt"`
	Response string     `json:"Response"`
	Messages []*message `json:"Messages"`
}

// funcs are the template functions Ollama registers when it parses a template.
var funcs = template.FuncMap{
	"json": func(v any) string {
		b, _ := json.Marshal(v)
		return string(b)
	},
}

// identifiers lists the field and variable names a template refers to, lower-cased.
func identifiers(node parse.Node, into map[string]bool) {
	switch n := node.(type) {
	case *parse.ListNode:
		if n == nil {
			return
		}
		for _, c := range n.Nodes {
			identifiers(c, into)
		}
	case *parse.ActionNode:
		identifiers(n.Pipe, into)
	case *parse.TemplateNode:
		identifiers(n.Pipe, into)
	case *parse.IfNode:
		identifiers(&n.BranchNode, into)
	case *parse.RangeNode:
		identifiers(&n.BranchNode, into)
	case *parse.WithNode:
		identifiers(&n.BranchNode, into)
	case *parse.BranchNode:
		identifiers(n.Pipe, into)
		identifiers(n.List, into)
		identifiers(n.ElseList, into)
	case *parse.PipeNode:
		if n == nil {
			return
		}
		for _, cmd := range n.Cmds {
			for _, arg := range cmd.Args {
				identifiers(arg, into)
			}
		}
	case *parse.FieldNode:
		for _, name := range n.Ident {
			into[strings.ToLower(name)] = true
		}
	case *parse.VariableNode:
		for _, name := range n.Ident {
			into[strings.ToLower(name)] = true
		}
	}
}

// parseTemplate parses the way Ollama does: missing keys render as zero values, and a template
// that mentions neither .Messages nor .Response gets a {{ .Response }} appended.
func parseTemplate(text string) (*template.Template, map[string]bool, error) {
	tmpl, err := template.New("").Option("missingkey=zero").Funcs(funcs).Parse(text)
	if err != nil {
		return nil, nil, err
	}
	names := map[string]bool{}
	for _, t := range tmpl.Templates() {
		identifiers(t.Root, names)
	}
	if !names["messages"] && !names["response"] {
		response := &parse.ActionNode{NodeType: parse.NodeAction, Pipe: &parse.PipeNode{NodeType: parse.NodePipe,
			Cmds: []*parse.CommandNode{{NodeType: parse.NodeCommand,
				Args: []parse.Node{&parse.FieldNode{NodeType: parse.NodeField, Ident: []string{"Response"}}}}}}}
		tmpl.Tree.Root.Nodes = append(tmpl.Tree.Root.Nodes, response)
	}
	return tmpl, names, nil
}

// pruner removes every node after the first .Response field, in template order; the field
// itself stays. A pipeline command left without arguments removes its whole action.
type pruner struct{ cut bool }

func (p *pruner) list(l *parse.ListNode) {
	if l == nil {
		return
	}
	kept := l.Nodes[:0]
	for _, n := range l.Nodes {
		if p.keep(n) {
			kept = append(kept, n)
		}
	}
	l.Nodes = kept
}

func (p *pruner) keep(node parse.Node) bool {
	if p.cut {
		return false
	}
	switch n := node.(type) {
	case *parse.ListNode:
		p.list(n)
	case *parse.IfNode:
		p.list(n.List)
		p.list(n.ElseList)
	case *parse.RangeNode:
		p.list(n.List)
		p.list(n.ElseList)
	case *parse.WithNode:
		p.list(n.List)
		p.list(n.ElseList)
	case *parse.ActionNode:
		return p.pipe(n.Pipe)
	}
	return true
}

func (p *pruner) pipe(pipe *parse.PipeNode) bool {
	var cmds []*parse.CommandNode
	for _, cmd := range pipe.Cmds {
		var args []parse.Node
		for _, arg := range cmd.Args {
			if p.cut {
				continue
			}
			if field, ok := arg.(*parse.FieldNode); ok {
				for _, name := range field.Ident {
					if name == "Response" {
						p.cut = true
					}
				}
			}
			args = append(args, arg)
		}
		if len(args) == 0 {
			return false
		}
		cmd.Args = args
		cmds = append(cmds, cmd)
	}
	pipe.Cmds = cmds
	return len(cmds) > 0
}

func exchange(system, prompt, response string) map[string]any {
	return map[string]any{"System": system, "Prompt": prompt, "Response": response, "Think": false, "IsThinkSet": false}
}

// conversation is the request's conversation, consecutive messages of one role joined as Ollama does.
func conversation(v values) (string, []*message) {
	msgs := v.Messages
	if msgs == nil {
		if v.System != "" {
			msgs = append(msgs, &message{Role: "system", Content: v.System})
		}
		msgs = append(msgs, &message{Role: "user", Content: v.Prompt})
		if v.Response != "" {
			msgs = append(msgs, &message{Role: "assistant", Content: v.Response})
		}
	}
	var systems []string
	var joined []*message
	for _, m := range msgs {
		if m.Role == "system" {
			systems = append(systems, m.Content)
		}
		if len(joined) > 0 && joined[len(joined)-1].Role == m.Role && m.Role != "tool" {
			last := *joined[len(joined)-1]
			last.Content += "\n\n" + m.Content
			joined[len(joined)-1] = &last
		} else {
			joined = append(joined, m)
		}
	}
	return strings.Join(systems, "\n\n"), joined
}

func render(text string, v values, plain bool) (string, error) {
	tmpl, names, err := parseTemplate(text)
	if err != nil {
		return "", err
	}
	var out bytes.Buffer
	if plain {
		err = tmpl.Execute(&out, exchange(v.System, v.Prompt, v.Response))
		return out.String(), err
	}
	allSystem, msgs := conversation(v)
	if names["messages"] || names["document"] {
		err = tmpl.Execute(&out, map[string]any{"System": allSystem, "Messages": msgs, "Tools": nil, "Response": "",
			"Think": false, "IsThinkSet": false})
		return out.String(), err
	}
	var system, prompt, response string
	flush := func() error {
		err := tmpl.Execute(&out, exchange(system, prompt, response))
		system, prompt, response = "", "", ""
		return err
	}
	for _, m := range msgs {
		switch m.Role {
		case "system":
			if prompt != "" || response != "" {
				if err := flush(); err != nil {
					return "", err
				}
			}
			system = m.Content
		case "user":
			if response != "" {
				if err := flush(); err != nil {
					return "", err
				}
			}
			prompt = m.Content
		case "assistant":
			response = m.Content
		}
	}
	// The turn being generated: the template up to {{ .Response }}, executed as a fresh template
	// (no options, no functions), as Ollama does.
	root := tmpl.Tree.Root.Copy().(*parse.ListNode)
	(&pruner{}).list(root)
	last, err := template.New("").AddParseTree("", &parse.Tree{Root: root})
	if err != nil {
		return "", err
	}
	if err := last.Execute(&out, exchange(system, prompt, response)); err != nil {
		return "", err
	}
	return out.String(), nil
}

func main() {
	plain := flag.Bool("execute", false, "execute the template once with System, Prompt and Response")
	flag.Parse()
	if flag.NArg() != 2 {
		fmt.Fprintln(os.Stderr, "usage: render [-execute] TEMPLATE_FILE VALUES_JSON_FILE")
		os.Exit(2)
	}
	text, err := os.ReadFile(flag.Arg(0))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	raw, err := os.ReadFile(flag.Arg(1))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	var v values
	if err := json.Unmarshal(raw, &v); err != nil {
		fmt.Fprintln(os.Stderr, "values:", err)
		os.Exit(2)
	}
	out, err := render(string(text), v, *plain)
	if err != nil {
		fmt.Fprintln(os.Stderr, "template:", err)
		os.Exit(1)
	}
	os.Stdout.WriteString(out)
}
