using System;

namespace EpollSharp.Native;

/// <summary>
/// A small set of references read far more often than changed (the loops a metrics listener or the watchdog looks at):
/// readers take <see cref="Snapshot"/> without a lock; <see cref="Add"/> and <see cref="Remove"/> copy the array under one.
/// </summary>
internal sealed class CopyOnWriteList<T>
    where T : class
{
    private readonly object _lock = new();
    private T[] _items = Array.Empty<T>();

    /// <summary>The items now; the array is never changed afterwards.</summary>
    internal T[] Snapshot => System.Threading.Volatile.Read(ref _items);

    internal void Add(T item)
    {
        lock (_lock)
        {
            var items = new T[_items.Length + 1];
            _items.CopyTo(items, 0);
            items[_items.Length] = item;
            System.Threading.Volatile.Write(ref _items, items);
        }
    }

    /// <summary>Removes <paramref name="item"/>; returns whether it was there.</summary>
    internal bool Remove(T item)
    {
        lock (_lock)
        {
            int index = Array.IndexOf(_items, item);
            if (index < 0)
            {
                return false;
            }

            var items = new T[_items.Length - 1];
            Array.Copy(_items, 0, items, 0, index);
            Array.Copy(_items, index + 1, items, index, _items.Length - index - 1);
            System.Threading.Volatile.Write(ref _items, items);
            return true;
        }
    }
}
