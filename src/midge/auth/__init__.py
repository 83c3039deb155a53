"""Authentication and authorization seams (password files, ACLs, LDAP, OAuth come later)."""
