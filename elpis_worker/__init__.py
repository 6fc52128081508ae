"""The Celery side of Elpis: the app, its tasks and beat schedule, the resident model, the agent loop,
tools, the emotion model and memory."""
