"""Built-in module types: manifest name -> module holding `run(ctx)` (imported only when used)."""

BUILTIN_MODULES: dict[str, str] = {
    "exec": "cidag.modules.exec",
    "user-data": "cidag.modules.user_data",
    "hostname": "cidag.modules.hostname",
    "users": "cidag.modules.users",
    "ssh-keys": "cidag.modules.ssh_keys",
    "ssh-host-keys": "cidag.modules.ssh_host_keys",
    "set-password": "cidag.modules.set_password",
    "write-files": "cidag.modules.write_files",
    "runcmd": "cidag.modules.runcmd",
    "scripts-user": "cidag.modules.scripts_user",
    "final-message": "cidag.modules.final_message",
    "network": "cidag.modules.network",
}
