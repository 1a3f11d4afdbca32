"""The ops console: a web application over the gateway's AdminService, signed in with an admin
key. It never touches a database; every change it makes is the gateway's audited admin call."""
