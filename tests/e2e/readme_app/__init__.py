"""Stand-ins for the names the original README's examples use but never define (``dynamo``, ``bedrock`` ...)."""
