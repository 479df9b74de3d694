"""The chat app: pipeline (route, retrieve, answer), answer chain, Gradio UI."""
