# Agents live in each tenant's schema; models arrive with the agents issue.
