package family

import (
	"errors"
	"fmt"
	"os"

	"github.com/mdlayher/genetlink"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// Spec describes a family as its client knows it.
type Spec struct {
	// Name is the family's registered name; errors name the family by it.
	Name string
	// Version goes into the header of every request.
	Version uint8
	// Group is the multicast group the family must have.
	Group string
	// Absent follows "generic netlink family NAME not registered" in the
	// error of a missing family: why it may be missing and what to do.
	Absent string
	// Check, when set, vets the registered family before its group is
	// looked up (a version the client does not speak).
	Check func(genetlink.Family) error
	// Commands names the commands by number, for errors.
	Commands []string
	// Also, when set, returns an error that the failure of cmd wraps
	// besides its errno (a state of the family's own), or nil.
	Also func(cmd uint8, err error) error
	// Malformed is the family's error for a reply that does not decode;
	// Get wraps it.
	Malformed error
}

// Conn is a command socket with the family resolved. It must be closed; it
// is not safe for concurrent use.
type Conn struct {
	c    *genetlink.Conn
	spec Spec
	// Family is the family as the kernel registered it.
	Family genetlink.Family
	// Group is the ID of Spec.Group.
	Group uint32
}

// Dial opens a generic netlink socket and resolves spec's family and group
// (see Init).
func Dial(spec Spec) (*Conn, error) {
	conn, err := genetlink.Dial(nil)
	if err != nil {
		return nil, fmt.Errorf("opening generic netlink socket: %w", err)
	}
	// Extended acks carry the kernel's reason (NL_SET_ERR_MSG, as in
	// "Trace state already set to requested state") into
	// OpError.Message; best effort.
	_ = conn.SetOption(netlink.ExtendedAcknowledge, true)
	c, err := Init(conn, spec)
	if err != nil {
		_ = conn.Close()
		return nil, err
	}
	return c, nil
}

// Init resolves spec's family and group on conn; tests call it with a
// genltest connection. When the family is not registered the error wraps
// os.ErrNotExist and says why with spec.Absent: the source is not
// available, which is not a crash.
func Init(conn *genetlink.Conn, spec Spec) (*Conn, error) {
	f, err := conn.GetFamily(spec.Name)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("generic netlink family %s not registered%s: %w", spec.Name, spec.Absent, err)
		}
		return nil, fmt.Errorf("resolving generic netlink family %s: %w", spec.Name, err)
	}
	if spec.Check != nil {
		if err := spec.Check(f); err != nil {
			return nil, err
		}
	}
	var group uint32
	for _, g := range f.Groups {
		if g.Name == spec.Group {
			group = g.ID
			break
		}
	}
	if group == 0 {
		return nil, fmt.Errorf("generic netlink family %s has no %q multicast group", spec.Name, spec.Group)
	}
	return &Conn{c: conn, spec: spec, Family: f, Group: group}, nil
}

// Close closes the socket.
func (c *Conn) Close() error { return c.c.Close() }

// Execute sends command cmd with the attributes encode writes (none when
// encode is nil) and returns the replies. Its errors name the family and
// the command; EPERM and EACCES name CAP_NET_ADMIN (and wrap
// os.ErrPermission through the errno); what Spec.Also returns is wrapped
// too.
func (c *Conn) Execute(cmd uint8, flags netlink.HeaderFlags, encode func(*netlink.AttributeEncoder)) ([]genetlink.Message, error) {
	var data []byte
	if encode != nil {
		ae := netlink.NewAttributeEncoder()
		encode(ae)
		b, err := ae.Encode()
		if err != nil {
			return nil, fmt.Errorf("encoding %s %s: %w", c.spec.Name, c.command(cmd), err)
		}
		data = b
	}
	req := genetlink.Message{
		Header: genetlink.Header{Command: cmd, Version: c.spec.Version},
		Data:   data,
	}
	msgs, err := c.c.Execute(req, c.Family.ID, netlink.Request|flags)
	if err != nil {
		return nil, c.mapError(cmd, err)
	}
	return msgs, nil
}

// command names cmd, or gives its number when Spec.Commands does not know
// it.
func (c *Conn) command(cmd uint8) string {
	if int(cmd) < len(c.spec.Commands) && c.spec.Commands[cmd] != "" {
		return c.spec.Commands[cmd]
	}
	return fmt.Sprintf("command %d", cmd)
}

// mapError names the step and turns errno values into what callers branch
// on.
func (c *Conn) mapError(cmd uint8, err error) error {
	name := c.command(cmd)
	if errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) {
		return fmt.Errorf("%s %s needs CAP_NET_ADMIN: %w", c.spec.Name, name, err)
	}
	if c.spec.Also != nil {
		if also := c.spec.Also(cmd, err); also != nil {
			return fmt.Errorf("%s %s: %w: %w", c.spec.Name, name, also, err)
		}
	}
	return fmt.Errorf("%s %s: %w", c.spec.Name, name, err)
}

// Get sends cmd, which takes no attributes, and decodes its one reply, of
// command reply, with parse. The errors of a reply that is missing, of
// another command or does not decode wrap Spec.Malformed and say what was
// read ("reading NET_DM configuration: ...").
func Get[T any](c *Conn, cmd, reply uint8, what string, parse func(*netlink.AttributeDecoder) (T, error)) (T, error) {
	var zero T
	msgs, err := c.Execute(cmd, 0, nil)
	if err != nil {
		return zero, err
	}
	if len(msgs) != 1 || msgs[0].Header.Command != reply {
		return zero, fmt.Errorf("reading %s %s: %w: want one %s reply, got %d messages",
			c.spec.Name, what, c.spec.Malformed, c.command(reply), len(msgs))
	}
	ad, err := netlink.NewAttributeDecoder(msgs[0].Data)
	if err != nil {
		return zero, fmt.Errorf("reading %s %s: %w: %w", c.spec.Name, what, c.spec.Malformed, err)
	}
	v, err := parse(ad)
	if err != nil {
		return zero, fmt.Errorf("reading %s %s: %w: %w", c.spec.Name, what, c.spec.Malformed, err)
	}
	return v, nil
}
