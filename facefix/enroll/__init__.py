"""enroll."""
