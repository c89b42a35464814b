# Knowledge bases live in each tenant's schema; models arrive with the knowledge issue.
