"""Step-time tools the policies and learners share: scratch buffers and replayed random state,
precision, the task network's features, statistics."""
