#include "controller.h"

#include "cli.h"

const cfg_key_t controller_schema[] = {
    {"listen", "address", CFG_ADDRESS, CFG_REQUIRED, NULL,
     "address and port to accept agents on, HOST:PORT (port 0 picks a free one)"},
    {"listen", "max_connections", CFG_UINT, 0, "16", "concurrent agent connections at most"},
    {"listen", "handshake_timeout", CFG_DURATION, 0, "10s",
     "drop peers that do not finish the TLS handshake in time"},
    {"listen", "idle_timeout", CFG_DURATION, 0, "5m", "drop peers silent for this long"},
    {"listen", "max_frame", CFG_SIZE, 0, "16M", "largest protocol frame accepted"},
    {"identity", "key", CFG_PATH, CFG_REQUIRED, NULL, "this controller's private key (mode 0600)"},
    {"identity", "cert", CFG_PATH, CFG_REQUIRED, NULL, "this controller's certificate"},
    {"agent", "fingerprint", CFG_FINGERPRINT, CFG_REQUIRED | CFG_MULTI, NULL,
     "SHA-256 fingerprint of an agent's certificate; repeat the key to accept several"},
    {"site", "id", CFG_STRING, 0, "default", "name of the site this controller keeps"},
    {"site", "docroot", CFG_PATH, CFG_REQUIRED, NULL,
     "what the web server serves: a symlink understudy switches between generations"},
    {"site", "data", CFG_PATH, CFG_REQUIRED, NULL, "generations, journal and state"},
    {"site", "owner", CFG_OWNER, 0, "www-data:www-data", "owner of the files written, USER:GROUP"},
    {"retention", "generations", CFG_UINT, 0, "10", "file generations kept for rollback"},
    {"retention", "days", CFG_UINT, 0, "5", "days a database dump is kept"},
    {"limits", "max_files", CFG_UINT, 0, "1000000", "refuse a sync listing more entries"},
    {"limits", "max_file_size", CFG_SIZE, 0, "4G", "refuse a sync with a larger file"},
    {"limits", "max_total_size", CFG_SIZE, 0, "64G", "refuse a sync whose files add up to more"},
    {"database", "socket", CFG_PATH, 0, NULL, "unix socket of the backup's MariaDB server"},
    {"database", "host", CFG_STRING, 0, NULL,
     "host of the backup's MariaDB server (instead of socket)"},
    {"database", "port", CFG_UINT, 0, "3306", "port, with host"},
    {"database", "user", CFG_STRING, 0, NULL, "database user"},
    {"database", "password_file", CFG_PATH, 0, NULL, "file holding the password (mode 0600)"},
    {"database", "name", CFG_STRING, 0, NULL, "the site's live database"},
    {"firewall", "admin", CFG_STRING, CFG_MULTI, NULL, "address or CIDR allowed to reach SSH"},
    {"firewall", "primary", CFG_STRING, CFG_MULTI, NULL,
     "address or CIDR of the primary (agent port)"},
    {"firewall", "ssh_port", CFG_UINT, 0, "22", "SSH port to allow from admin addresses"},
    {"firewall", "webhook_port", CFG_UINT, 0, NULL, "port of the failover webhook, if any"},
    {"firewall", "http_ports", CFG_STRING, 0, "80, 443",
     "web ports opened to Cloudflare's ranges, separated by commas"},
    {"firewall", "cloudflare_ranges", CFG_PATH, 0, NULL,
     "file of Cloudflare's ranges, one CIDR per line (default: the list built in)"},
    {NULL, NULL, 0, 0, NULL, NULL},
};

int controller_load_config(const char *path, cfg_t **ret_cfg)
{
    return cli_load_config(controller_schema, path, ret_cfg);
}
