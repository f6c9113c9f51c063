"""The playground page's files (HTML, JavaScript, CSS), installed as package data and
served as they are by api/routes/playground.py."""
