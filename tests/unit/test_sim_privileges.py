"""The simulator's privilege universe against pveum.md §5."""
from pvesim.privileges import PVE8, PVE9, for_major

PVE9_LIST = """
Datastore.Allocate Datastore.AllocateSpace Datastore.AllocateTemplate Datastore.Audit
Group.Allocate Mapping.Audit Mapping.Modify Mapping.Use Permissions.Modify Pool.Allocate
Pool.Audit Realm.Allocate Realm.AllocateUser SDN.Allocate SDN.Audit SDN.Use Sys.AccessNetwork
Sys.Audit Sys.Console Sys.Incoming Sys.Modify Sys.PowerMgmt Sys.Syslog User.Modify VM.Allocate
VM.Audit VM.Backup VM.Clone VM.Config.CDROM VM.Config.CPU VM.Config.Cloudinit VM.Config.Disk
VM.Config.HWType VM.Config.Memory VM.Config.Network VM.Config.Options VM.Console
VM.GuestAgent.Audit VM.GuestAgent.FileRead VM.GuestAgent.FileSystemMgmt VM.GuestAgent.FileWrite
VM.GuestAgent.Unrestricted VM.Migrate VM.PowerMgmt VM.Replicate VM.Snapshot VM.Snapshot.Rollback
""".split()

BUILTIN = {
    "Administrator", "NoAccess", "PVEAdmin", "PVEAuditor", "PVEDatastoreAdmin", "PVEDatastoreUser",
    "PVEMappingAdmin", "PVEMappingUser", "PVEPoolAdmin", "PVEPoolUser", "PVESDNAdmin", "PVESDNUser",
    "PVESysAdmin", "PVETemplateUser", "PVEUserAdmin", "PVEVMAdmin", "PVEVMUser",
}


def test_pve9_has_exactly_the_47_listed_privileges():
    assert len(PVE9_LIST) == 47
    assert PVE9.valid == set(PVE9_LIST)


def test_pve8_is_pve9_minus_guest_agent_and_replicate_plus_monitor():
    dropped = {p for p in PVE9_LIST if p.startswith("VM.GuestAgent.")} | {"VM.Replicate"}
    assert len(dropped) == 6
    assert PVE8.valid == (set(PVE9_LIST) - dropped) | {"VM.Monitor"}
    assert len(PVE8.valid) == 42


def test_audit_privileges_valid_in_both_versions():
    for priv in ("SDN.Audit", "Mapping.Audit", "Pool.Audit", "Sys.AccessNetwork"):
        assert priv in PVE8.valid and priv in PVE9.valid


def test_seventeen_builtin_roles_in_both_versions():
    assert set(PVE8.builtin_roles) == BUILTIN
    assert set(PVE9.builtin_roles) == BUILTIN


def test_administrator_is_everything_and_noaccess_nothing():
    for privs in (PVE8, PVE9):
        assert privs.builtin_roles["Administrator"] == privs.valid
        assert privs.builtin_roles["NoAccess"] == frozenset()


def test_pveauditor_per_version():
    assert ",".join(sorted(PVE9.builtin_roles["PVEAuditor"])) == (
        "Datastore.Audit,Mapping.Audit,Pool.Audit,SDN.Audit,Sys.Audit,VM.Audit,VM.GuestAgent.Audit")
    assert ",".join(sorted(PVE8.builtin_roles["PVEAuditor"])) == (
        "Datastore.Audit,Mapping.Audit,Pool.Audit,SDN.Audit,Sys.Audit,VM.Audit")


def test_builtin_roles_only_hold_valid_privileges_and_pveadmin_lacks_mapping_modify():
    for privs in (PVE8, PVE9):
        for role, held in privs.builtin_roles.items():
            assert held <= privs.valid, role
        assert "Mapping.Modify" not in privs.builtin_roles["PVEAdmin"]
        assert privs.builtin_roles["PVETemplateUser"] == {"VM.Clone", "VM.Audit"}


def test_for_major_picks_the_list():
    assert for_major(7) is PVE8 and for_major(8) is PVE8
    assert for_major(9) is PVE9 and for_major(10) is PVE9


def test_pve9_vm_user_has_the_guest_agent_file_privileges():
    """As upstream's 9.x create_roles: the file privileges are in the VM user group."""
    guest_files = {"VM.GuestAgent.FileRead", "VM.GuestAgent.FileSystemMgmt", "VM.GuestAgent.FileWrite"}
    assert guest_files <= PVE9.builtin_roles["PVEVMUser"]
    assert "VM.GuestAgent.Unrestricted" not in PVE9.builtin_roles["PVEVMUser"]
    assert not guest_files & PVE8.builtin_roles["PVEVMUser"]
